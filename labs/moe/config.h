/* config.h — the lab model's shape and semantics: a decoder-only MoE transformer exactly
 * as Hugging Face's MixtralForCausalLM, Qwen3MoeForCausalLM and GptOssForCausalLM define
 * it (modeling_mixtral.py, modeling_qwen3_moe.py, modeling_gpt_oss.py):
 *
 *   x = embed_tokens[token]
 *   per layer:  h = RMSNorm(x)                               input_layernorm
 *               q, k, v = Wq h (+bq), Wk h (+bk), Wv h (+bv) GQA: H q heads, H_kv kv heads
 *               [Qwen3] q, k = RMSNorm over head_dim, per head   q_norm / k_norm
 *               q, k = RoPE(q, k, pos)                       rotate-half, base rope_theta
 *                                                            [gpt-oss] YaRN frequencies, cos
 *                                                            and sin times mscale
 *               x += Wo softmax(q·K^T / sqrt(head_dim)) V (+bo)  causal, q head h → kv head
 *                                                            h/(H/H_kv); [gpt-oss] a sink
 *                                                            logit per head joins the softmax
 *                                                            and is dropped; sliding layers
 *                                                            see keys pos−window < k <= pos
 *               h = RMSNorm(x)                               post_attention_layernorm
 *               p = softmax(Wr h (+br)); top_k experts; [renormalize]
 *               x += Σ_j p_j · (Wd_e act(Wg_e h (+bg), Wu_e h (+bu)) (+bd))
 *                   act = silu(g)·u  (Mixtral, Qwen3)
 *                   act = (clamp(u, −lim, lim) + 1) · g' · sigmoid(α g'), g' = min(g, lim)
 *                                                            (gpt-oss: α 1.702, lim 7)
 *   logits = W_lm RMSNorm(x)                                 norm; lm_head (or tied embed_tokens)
 *   RMSNorm(x) = w ⊙ x / sqrt(mean(x²) + eps)
 *
 * gpt-oss's router takes a softmax over its top-k logits only; that is the full softmax's
 * top-k probabilities renormalized (the common denominator cancels), so norm_topk_prob = 1
 * describes it.
 *
 * Presets: gptoss20b and gptoss120b (gpt-oss's shapes and semantics, bf16 weights),
 * gptoss20b_mixtral (gpt-oss-20b's shapes with Mixtral semantics: no biases, sinks, window,
 * YaRN or clamp), qwen3moe (Qwen3-30B-A3B's shapes), mini (seconds, validated against the
 * CPU reference), and test models (tiny_mixtral, tiny_qwen3, tiny_gptoss) whose logits are
 * stored in tests/fixtures/. Pure C11, unit-tested (tests/test_lab_config.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "json.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { MOE_ARCH_MIXTRAL = 0, MOE_ARCH_QWEN3 = 1, MOE_ARCH_GPTOSS = 2 } MoeArch;
typedef enum { MOE_ROPE_DEFAULT = 0, MOE_ROPE_YARN = 1 } MoeRope;
typedef enum { MOE_ACT_SILU = 0, MOE_ACT_SWIGLU_CLAMP = 1 } MoeAct;
/* How weights are stored: bf16 (2 bytes), fp8 (1 byte), MXFP4 (E2M1 nibbles + one UE8M0
 * scale byte per 32 weights: 4.25 bits). */
typedef enum { MOE_WF_BF16 = 0, MOE_WF_FP8 = 1, MOE_WF_MXFP4 = 2 } MoeWeightFormat;

#define MOE_MAX_LAYER_TYPES 256 /* layer_types entries a config may list */

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
  int64_t sliding_window; /* 0: none; else a sliding layer sees at most this many positions */
  /* ---- gpt-oss (GptOssForCausalLM); all zero for Mixtral and Qwen3 ---- */
  int n_layer_types;      /* 0: every layer slides when sliding_window > 0; else L entries: */
  unsigned char layer_sliding[MOE_MAX_LAYER_TYPES]; /* 1 sliding_attention, 0 full_attention */
  int attn_bias;          /* q, k, v, o projections have biases */
  int attn_sinks;         /* self_attn.sinks: one logit per query head in the softmax */
  int router_bias;        /* the router Linear has a bias */
  int expert_bias;        /* gate, up and down projections of each expert have biases */
  MoeAct act;             /* SwiGLU (silu) or gpt-oss's clamped SwiGLU */
  double swiglu_limit, swiglu_alpha;          /* clamp and sigmoid gain (7.0, 1.702) */
  MoeRope rope_type;
  double yarn_factor, yarn_beta_fast, yarn_beta_slow; /* rope_scaling's factor, beta_fast/slow */
  double yarn_attn_factor;                    /* mscale on cos and sin: 0.1·ln(factor) + 1 */
  int yarn_orig_max_pos, yarn_truncate;       /* original_max_position_embeddings, truncate */
  int max_pos;            /* max_position_embeddings (0: not given) */
  MoeWeightFormat expert_format; /* experts as stored on disk (config.json's quantization) */
} MoeConfig;

/** Fill c with preset `name` (moe_config_preset_names lists them). Returns 0, or -1 for
 *  an unknown name. */
int moe_config_preset(const char *name, MoeConfig *c);
/** The preset names, comma separated, for usage text. */
const char *moe_config_preset_names(void);

/** Check shapes: every size >= 1, H % H_kv == 0, head_dim even, top_k <= E, eps and theta
 *  > 0, sizes small enough that every tensor has < 2^40 elements. Returns 0, or -1 with
 *  "field: reason" in err. */
int moe_config_check(const MoeConfig *c, char *err, size_t errlen);

/** Read a Hugging Face config object (MixtralForCausalLM / model_type "mixtral",
 *  Qwen3MoeForCausalLM / "qwen3_moe", or GptOssForCausalLM / "gpt_oss"). Unsupported
 *  settings are refused with the field named: hidden_act other than silu, rope scaling
 *  other than "default" (gpt-oss: "yarn" too), attention_bias (except gpt-oss), Qwen3
 *  decoder_sparse_step != 1 or a non-empty mlp_only_layers (dense layers), Qwen3
 *  use_sliding_window; gpt-oss layer_types of the wrong length or with another type,
 *  quantization_config other than mxfp4. rope_theta is read at the top level or from
 *  rope_parameters (transformers v5). gpt-oss fields left out take GptOssConfig's
 *  defaults (transformers configuration_gpt_oss.py). Returns 0, or -1 with
 *  "config.json: field: reason" in err. */
int moe_config_from_hf(const GtlJson *j, MoeConfig *c, char *err, size_t errlen);
/** moe_config_from_hf on the file at path. */
int moe_config_read(const char *path, MoeConfig *c, char *err, size_t errlen);
/** Write c as a Hugging Face config.json (the architecture of c->arch; bf16 torch_dtype;
 *  gpt-oss with every field of the released config, and quantization_config when
 *  c->expert_format is MOE_WF_MXFP4). Returns 0, or -1 with the path and strerror in err. */
int moe_config_write(const char *path, const MoeConfig *c, char *err, size_t errlen);

/** The attention window of layer l: 0 (full causal) or sliding_window (a key k is
 *  visible to the query at pos iff pos − window < k <= pos). */
int64_t moe_layer_window(const MoeConfig *c, int l);
/** YaRN (transformers modeling_rope_utils.py _compute_yarn_parameters; Peng et al. 2023,
 *  arXiv:2309.00071): inv_freq[head_dim/2] and the cos/sin factor, returned. Default
 *  RoPE: theta^(−2i/head_dim) and 1. low/high (may be NULL) get the correction range. */
double moe_rope_inv_freq(const MoeConfig *c, double *inv_freq, double *low, double *high);
const char *moe_arch_name(MoeArch a);

/* ---- sizes ---- */
/** Parameters of one layer's attention (q, k, v, o, norms, biases, sinks) and of one
 *  expert (3·F·D, plus 2F + D biases for gpt-oss). */
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
/** Keys one sequence reads in one decode step, summed over the layers, at ctx cached
 *  positions: ctx + 1 per full-attention layer (the step's own key included), min(ctx + 1,
 *  w) per sliding-window layer of w keys (moe_layer_window). ctx may be an average over
 *  steps; then the sum is exact when no step's ctx + 1 lies on the other side of w. */
double moe_kv_positions(const MoeConfig *c, double ctx);
/** The roofline bytes of one decode step at batch B: every non-expert weight once, the
 *  expected distinct experts of each layer, B embedding rows, and per sequence the K/V
 *  rows of the keys read (moe_kv_positions: ctx already cached plus the step's own, a
 *  sliding-window layer only its window's), with weights of w_bytes and KV of kv_bytes
 *  per element. */
double moe_step_bytes(const MoeConfig *c, int B, double ctx, int w_bytes, int kv_bytes);
/** Bits per weight of a format: 16, 8, 4.25 (MXFP4: 4 + one 8-bit scale per 32). */
double moe_weight_bits(MoeWeightFormat f);
/** moe_step_bytes with the experts' matrices in expert_fmt and every other weight
 *  (attention, router, norms, biases, embeddings, lm_head) in dense_fmt. gpt-oss as
 *  released: MOE_WF_MXFP4 experts, MOE_WF_BF16 the rest. */
double moe_step_bytes_fmt(const MoeConfig *c, int B, double ctx, MoeWeightFormat expert_fmt,
                          MoeWeightFormat dense_fmt, int kv_bytes);

#ifdef __cplusplus
}
#endif
