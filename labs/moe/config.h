/* config.h — the lab model's shape and semantics (DESIGN.md section 6): a decoder-only MoE
 * transformer exactly as Hugging Face's MixtralForCausalLM and Qwen3MoeForCausalLM define
 * it (modeling_mixtral.py, modeling_qwen3_moe.py):
 *
 *   x = embed_tokens[token]
 *   per layer:  h = RMSNorm(x)                               input_layernorm
 *               q, k, v = Wq h, Wk h, Wv h                   GQA: H q heads, H_kv kv heads
 *               [Qwen3] q, k = RMSNorm over head_dim, per head   q_norm / k_norm
 *               q, k = RoPE(q, k, pos)                       rotate-half, base rope_theta
 *               x += Wo softmax(q·K^T / sqrt(head_dim)) V    causal, q head h → kv head h/(H/H_kv)
 *               h = RMSNorm(x)                               post_attention_layernorm
 *               p = softmax(Wr h); top_k experts; [renormalize]  Mixtral always, Qwen3 norm_topk_prob
 *               x += Σ_j p_j · Wd_e (silu(Wg_e h) ⊙ Wu_e h)  SwiGLU experts
 *   logits = W_lm RMSNorm(x)                                 norm; lm_head (or tied embed_tokens)
 *   RMSNorm(x) = w ⊙ x / sqrt(mean(x²) + eps)
 *
 * Presets: gptoss20b (gpt-oss-20b's shapes with Mixtral semantics — not gpt-oss's own
 * attention sinks, biases or clamped SwiGLU), qwen3moe (Qwen3-30B-A3B's shapes), mini
 * (seconds, validated against the CPU reference), and two tiny test models whose logits
 * are stored in tests/fixtures/. Pure C11, unit-tested (tests/test_lab_config.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "json.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MOE_ARCH_MIXTRAL = 0, MOE_ARCH_QWEN3 = 1 } MoeArch;

typedef struct {
  char name[32];          /* preset name, or "hf" for a config.json */
  MoeArch arch;
  int L;                  /* layers (num_hidden_layers) */
  int D;                  /* hidden size */
  int H, H_kv, head_dim;  /* query heads, key/value heads, dims per head */
  int E, top_k;           /* experts, experts per token */
  int F;                  /* expert FFN size (intermediate / moe_intermediate_size) */
  int V;                  /* vocabulary */
  int qk_norm;            /* Qwen3-MoE: RMSNorm of each q and k head before RoPE */
  int norm_topk_prob;     /* renormalize the top-k probabilities to sum to 1 */
  int tie_embeddings;     /* lm_head is embed_tokens */
  double rms_eps, rope_theta;
  int64_t sliding_window; /* 0: none; else attention sees at most this many positions */
} MoeConfig;

/** Fill c with preset `name`: gptoss20b, qwen3moe, mini, tiny_mixtral, tiny_qwen3.
 *  Returns 0, or -1 for an unknown name. */
int moe_config_preset(const char *name, MoeConfig *c);
/** The preset names, comma separated, for usage text. */
const char *moe_config_preset_names(void);

/** Check shapes: every size >= 1, H % H_kv == 0, head_dim even, top_k <= E, eps and theta
 *  > 0, sizes small enough that every tensor has < 2^40 elements. Returns 0, or -1 with
 *  "field: reason" in err. */
int moe_config_check(const MoeConfig *c, char *err, size_t errlen);

/** Read a Hugging Face config object (MixtralForCausalLM / model_type "mixtral", or
 *  Qwen3MoeForCausalLM / "qwen3_moe"). Unsupported settings are refused with the field
 *  named: hidden_act other than silu, rope scaling other than "default", attention_bias,
 *  Qwen3 decoder_sparse_step != 1 or a non-empty mlp_only_layers (dense layers), Qwen3
 *  use_sliding_window. rope_theta is read at the top level or from rope_parameters
 *  (transformers v5). Returns 0, or -1 with "config.json: field: reason" in err. */
int moe_config_from_hf(const GtlJson *j, MoeConfig *c, char *err, size_t errlen);
/** moe_config_from_hf on the file at path. */
int moe_config_read(const char *path, MoeConfig *c, char *err, size_t errlen);
/** Write c as a Hugging Face config.json (the architecture of c->arch; bf16 torch_dtype).
 *  Returns 0, or -1 with the path and strerror in err. */
int moe_config_write(const char *path, const MoeConfig *c, char *err, size_t errlen);

/* ---- sizes (parameters are bf16 weights: 2 bytes each) ---- */
/** Parameters of one layer's attention (q, k, v, o, norms) and of one expert (3·F·D). */
uint64_t moe_params_attn(const MoeConfig *c);
uint64_t moe_params_expert(const MoeConfig *c);
/** Every parameter of the model (lm_head counted once when tied). */
uint64_t moe_params_total(const MoeConfig *c);
/** Parameters one token at batch 1 reads: attention, router and top_k experts of every
 *  layer, the final norm and lm_head, one embedding row. gptoss20b: 3.6e9. */
uint64_t moe_params_active(const MoeConfig *c);
/** Expected distinct experts a layer reads when B tokens each pick top_k of E uniformly:
 *  E·(1 − (1 − k/E)^B) (the chance an expert is picked by none of B tokens is
 *  (1 − k/E)^B). Equals k at B = 1. */
double moe_expected_experts(int E, int top_k, int B);
/** The roofline bytes of one decode step at batch B: every non-expert weight once, the
 *  expected distinct experts of each layer, B embedding rows, and per sequence the K/V
 *  rows of ctx + 1 positions read (ctx already cached, plus the step's own), with weights
 *  of w_bytes and KV of kv_bytes per element. */
double moe_step_bytes(const MoeConfig *c, int B, double ctx, int w_bytes, int kv_bytes);

#ifdef __cplusplus
}
#endif
