// model.cuh — ch12's workload: the decode step of the lab's `mini` model (its shapes and
// semantics from labs/moe's preset), the order of its launches, and its roofline. The
// kernels are in kernels.cuh, the CPU reference in reference.cuh, the driver in step.cuh.
//
// The workload: one decode step (batch 1, one new token) of the lab's `mini` MoE model,
// with Mixtral / Qwen3-MoE semantics as their Hugging Face implementations define them:
//   x = embed[token]
//   per layer:  h = RMSNorm(x);  q,k,v = Wq h, Wk h, Wv h;  RoPE(q, k) at position P;
//               append k,v to the KV cache (P past positions already there);
//               a = softmax(q·K^T / sqrt(head_dim)) V per head (GQA: H q heads share
//               H_kv kv heads);  x += Wo a;
//               h = RMSNorm(x);  p = softmax(Wr h);  top_k experts, weights renormalized;
//               x += Σ_j w_j · Wd_e (silu(Wg_e h) ⊙ Wu_e h)        (SwiGLU experts)
//   logits = W_lm RMSNorm(x);  next token = argmax(logits)
// Weights bf16 (seeded, each linear scaled by sqrt(3/fan_in) so activations stay O(1)),
// activations, KV cache and accumulation fp32.
//
// Roofline: the whole model (29 MB at the default size) fits in the H200's L2, so after
// warm-up every step reads it from L2 (timings are L2-warm; --l2=cold flushes). Bytes per
// step = the weights a step touches once (attention, router, the top_k chosen experts,
// one embedding row, the LM head) + the KV cache it reads. Neither bandwidth nor flops
// bound this step: ~9 MB at 4.8 TB/s is ~2 µs, while 56 launches cost far more.
#pragma once
#include <stdio.h>
#include <string.h>

#include "../labs/moe/config.h"  // the mini preset: moe_config_preset
#include "kernels.cuh"

// Weight tensors of one layer, in storage order, and their shapes (rows × cols, bf16).
enum { W_ATTN_NORM, W_Q, W_K, W_V, W_O, W_FFN_NORM, W_ROUTER, W_GATE, W_UP, W_DOWN, W_NT };
static const size_t step_numel[W_NT] = {
    STEP_D,                               // attn_norm [D]
    (size_t)STEP_Q * STEP_D,              // q_proj [H·hd][D]
    (size_t)STEP_KV * STEP_D,             // k_proj [H_kv·hd][D]
    (size_t)STEP_KV * STEP_D,             // v_proj [H_kv·hd][D]
    (size_t)STEP_D * STEP_Q,              // o_proj [D][H·hd]
    STEP_D,                               // post_attention_norm [D]
    (size_t)STEP_E * STEP_D,              // router [E][D]
    (size_t)STEP_E * STEP_F * STEP_D,     // gate_proj [E][F][D]
    (size_t)STEP_E * STEP_F * STEP_D,     // up_proj [E][F][D]
    (size_t)STEP_E * STEP_D * STEP_F};    // down_proj [E][D][F]
static const int step_fan_in[W_NT] = {0, STEP_D, STEP_D, STEP_D, STEP_Q, 0, STEP_D,
                                      STEP_D, STEP_D, STEP_F};

typedef struct {
  int L, P;          // layers; past positions (the new token sits at position P)
  int token;         // the step's input token
  size_t off[STEP_MAX_L][W_NT], off_embed, off_final_norm, off_lm_head, n_w;  // bf16 elems
  __nv_bfloat16 *d_w;          // every weight, one allocation
  float *d_kc, *d_vc;          // KV cache [L][H_kv][P+1][head_dim] fp32
  int *d_token, *d_next;       // input token; argmax of the logits
  float *d_x, *d_xn;           // residual stream [D]; normalized copy [D]
  float *d_q, *d_k, *d_v, *d_attn;  // [H·hd], [H_kv·hd], [H_kv·hd], [H·hd]
  float *d_router;             // router logits [E]
  int *d_topk_idx;             // [L][top_k] chosen experts, kept per layer for validation
  float *d_topk_w;             // [L][top_k] their renormalized weights
  float *d_act, *d_ys;         // expert hidden [top_k][F]; expert outputs [top_k][D]
  float *d_logits;             // [V] (guarded)
} StepProblem;

static const __nv_bfloat16 *step_w(const StepProblem *p, int l, int t) {
  return p->d_w + p->off[l][t];
}

// ---- what each variant defines ---------------------------------------------------------
// Enqueue one kernel (cudaLaunchKernel in baseline; cudaLaunchKernelExC with the PDL
// attribute in optimized). args[i] points to the kernel's i-th argument.
void step_kernel_launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void **args,
                        cudaStream_t s);
// Once, before the first step: build whatever the variant replays. Returns 1 when
// programmatic dependent launch is in use, else 0.
int step_prepare(StepProblem *p, cudaStream_t s);
// One decode step on s (gtl_bench's callback; user is the StepProblem).
void step_run(void *user, cudaStream_t s);
// Free what step_prepare built.
void step_release(void);

// ---- the shapes: the lab's preset, checked against the kernels' ---------------------------
// The lab's `mini` preset with L layers (labs/moe/config.c) into c. Returns 0, or -1 with the
// reason in err when the preset is missing or differs from the shapes and semantics the
// kernels are compiled for (kernels.cuh): Mixtral-style, no biases, sinks, window or q/k norm.
static int step_config(int L, MoeConfig *c, char *err, size_t n) {
  if (moe_config_preset("mini", c) != 0) {
    snprintf(err, n, "the lab has no preset 'mini'");
    return -1;
  }
  c->L = L;
  const int same = c->arch == MOE_ARCH_MIXTRAL && c->D == STEP_D && c->H == STEP_H &&
                   c->H_kv == STEP_H_KV && c->head_dim == STEP_HEAD_DIM && c->E == STEP_E &&
                   c->top_k == STEP_TOP_K && c->F == STEP_F && c->V == STEP_V && !c->qk_norm &&
                   c->norm_topk_prob && !c->tie_embeddings && c->sliding_window == 0 &&
                   c->rope_type == MOE_ROPE_DEFAULT && c->rope_theta == STEP_ROPE_THETA &&
                   (float)c->rms_eps == STEP_EPS && c->act == MOE_ACT_SILU && !c->attn_bias &&
                   !c->attn_sinks && !c->router_bias && !c->expert_bias;
  if (!same) {
    snprintf(err, n, "labs/moe's preset 'mini' (D %d, H %d/%d of %d, E %d top-%d, F %d, V %d) is "
                     "not the model ch12's kernels are compiled for (kernels.cuh: D %d, H %d/%d "
                     "of %d, E %d top-%d, F %d, V %d, Mixtral semantics)",
             c->D, c->H, c->H_kv, c->head_dim, c->E, c->top_k, c->F, c->V, STEP_D, STEP_H,
             STEP_H_KV, STEP_HEAD_DIM, STEP_E, STEP_TOP_K, STEP_F, STEP_V);
    return -1;
  }
  return 0;
}

// ---- the step: every launch, in order ---------------------------------------------------
template <typename T> struct StepArg { typedef T type; };  // keeps args out of deduction

static int step_launch_count;

// Launch kernel<<<grid, block, smem, s>>>(args...) through the variant's launcher.
template <typename... KArgs>
static void step_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t s, typename StepArg<KArgs>::type... args) {
  void *argv[] = {(void *)&args...};
  step_kernel_launch((const void *)kernel, grid, block, smem, argv, s);
  step_launch_count++;
}

// Enqueue one decode step on s. Returns the number of kernel launches (13·L + 4).
static int step_enqueue(const StepProblem *p, cudaStream_t s) {
  const int pos = p->P, S = p->P + 1, s_max = p->P + 1, RB = STEP_ROWS_PER_BLOCK;
  const size_t kv_layer = (size_t)STEP_H_KV * s_max * STEP_HEAD_DIM;
  const float *none = NULL;
  step_launch_count = 0;
  step_launch(step_embed_kernel, 1, STEP_D, 0, s, p->d_w + p->off_embed, p->d_token, p->d_x);
  for (int l = 0; l < p->L; l++) {
    float *kc = p->d_kc + l * kv_layer, *vc = p->d_vc + l * kv_layer;
    int *idx = p->d_topk_idx + l * STEP_TOP_K;
    float *tw = p->d_topk_w + l * STEP_TOP_K;
    step_launch(step_rmsnorm_kernel, 1, STEP_D, 0, s, p->d_x, step_w(p, l, W_ATTN_NORM), p->d_xn);
    step_launch(step_gemv_kernel<1>, STEP_Q / RB, 256, 0, s, step_w(p, l, W_Q), p->d_xn, none,
                p->d_q, (int)STEP_Q);
    step_launch(step_gemv_kernel<1>, STEP_KV / RB, 256, 0, s, step_w(p, l, W_K), p->d_xn, none,
                p->d_k, (int)STEP_KV);
    step_launch(step_gemv_kernel<1>, STEP_KV / RB, 256, 0, s, step_w(p, l, W_V), p->d_xn, none,
                p->d_v, (int)STEP_KV);
    step_launch(step_rope_kv_kernel, 1, 256, 0, s, p->d_q, p->d_k, p->d_v, kc, vc, pos, s_max);
    step_launch(step_attention_kernel, STEP_H, 128, (size_t)S * sizeof(float), s, p->d_q, kc, vc,
                p->d_attn, S, s_max);
    step_launch(step_gemv_kernel<STEP_Q / 256>, STEP_D / RB, 256, 0, s, step_w(p, l, W_O),
                p->d_attn, p->d_x, p->d_x, (int)STEP_D);
    step_launch(step_rmsnorm_kernel, 1, STEP_D, 0, s, p->d_x, step_w(p, l, W_FFN_NORM), p->d_xn);
    step_launch(step_gemv_kernel<1>, (STEP_E + RB - 1) / RB, 256, 0, s, step_w(p, l, W_ROUTER),
                p->d_xn, none, p->d_router, (int)STEP_E);
    step_launch(step_router_topk_kernel, 1, 32, 0, s, p->d_router, idx, tw);
    step_launch(step_expert_gate_up_kernel, dim3(STEP_F / RB, STEP_TOP_K), 256, 0, s,
                step_w(p, l, W_GATE), step_w(p, l, W_UP), p->d_xn, idx, p->d_act);
    step_launch(step_expert_down_kernel, dim3(STEP_D / RB, STEP_TOP_K), 256, 0, s,
                step_w(p, l, W_DOWN), p->d_act, idx, p->d_ys);
    step_launch(step_moe_combine_kernel, 1, STEP_D, 0, s, p->d_ys, tw, p->d_x);
  }
  step_launch(step_rmsnorm_kernel, 1, STEP_D, 0, s, p->d_x, p->d_w + p->off_final_norm, p->d_xn);
  step_launch(step_gemv_kernel<1>, STEP_V / RB, 256, 0, s, p->d_w + p->off_lm_head, p->d_xn, none,
              p->d_logits, (int)STEP_V);
  step_launch(step_argmax_kernel, 1, 1024, 0, s, p->d_logits, (int)STEP_V, p->d_next);
  return step_launch_count;
}

// ---- roofline model ----------------------------------------------------------------------
// Bytes one step must read: every weight it touches once (the top_k chosen experts only),
// one embedding row, the KV cache of S = P+1 positions. Activations (a few KB) left out.
static double step_bytes(const StepProblem *p) {
  const double expert = 3.0 * STEP_F * STEP_D;  // gate + up + down of one expert
  const double layer = 2.0 * STEP_D + step_numel[W_Q] + step_numel[W_K] + step_numel[W_V] +
                       step_numel[W_O] + step_numel[W_ROUTER] + STEP_TOP_K * expert;
  const double w = (double)p->L * layer + STEP_D + STEP_D + (double)STEP_V * STEP_D;
  const double kv = (double)p->L * 2 * STEP_KV * (p->P + 1);
  return 2.0 * w + 4.0 * kv;
}
// Flops: 2 per weight touched (GEMVs) + 4·S·hd per query head (scores and P·V).
static double step_flops(const StepProblem *p) {
  const double expert = 3.0 * STEP_F * STEP_D;
  const double layer = (double)step_numel[W_Q] + step_numel[W_K] + step_numel[W_V] +
                       step_numel[W_O] + step_numel[W_ROUTER] + STEP_TOP_K * expert +
                       2.0 * STEP_H * (p->P + 1) * STEP_HEAD_DIM;
  return 2.0 * ((double)p->L * layer + (double)STEP_V * STEP_D);
}
