/* config.c — presets, Hugging Face config.json, sizes (see config.h). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define FAIL(...)                                            \
  do {                                                       \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);   \
    return -1;                                               \
  } while (0)

typedef struct {
  const char *name;
  MoeConfig c;
} Preset;

/* name, arch, L, D, H, H_kv, head_dim, E, top_k, F, V, qk_norm, norm_topk, tied, eps, theta */
static const Preset presets[] = {
    /* gpt-oss-20b's shapes (HF config of openai/gpt-oss-20b: rope_theta 150000, eps 1e-5) */
    {"gptoss20b", {"gptoss20b", MOE_ARCH_MIXTRAL, 24, 2880, 64, 8, 64, 32, 4, 2880, 201088,
                   0, 1, 0, 1e-5, 150000.0, 0}},
    /* Qwen3-30B-A3B's shapes (its HF config: rope_theta 1e6, eps 1e-6, norm_topk_prob) */
    {"qwen3moe", {"qwen3moe", MOE_ARCH_QWEN3, 48, 2048, 32, 4, 128, 128, 8, 768, 151936,
                  1, 1, 0, 1e-6, 1000000.0, 0}},
    /* ch12's mini decode step uses the same shapes */
    {"mini", {"mini", MOE_ARCH_MIXTRAL, 4, 256, 8, 2, 32, 8, 2, 512, 2048, 0, 1, 0, 1e-6,
              10000.0, 0}},
    /* test models of tests/fixtures/: head_dim != D/H, GQA 4:1, tied embeddings, and
     * Qwen3 without renormalization of the top-k probabilities */
    {"tiny_mixtral", {"tiny_mixtral", MOE_ARCH_MIXTRAL, 2, 64, 4, 2, 16, 4, 2, 96, 128, 0, 1,
                      0, 1e-5, 10000.0, 0}},
    {"tiny_qwen3", {"tiny_qwen3", MOE_ARCH_QWEN3, 2, 64, 4, 1, 32, 8, 3, 48, 128, 1, 0, 1,
                    1e-6, 1000000.0, 0}},
};
#define N_PRESETS (int)(sizeof presets / sizeof presets[0])

int moe_config_preset(const char *name, MoeConfig *c) {
  for (int i = 0; i < N_PRESETS; i++)
    if (name && strcmp(name, presets[i].name) == 0) {
      *c = presets[i].c;
      return 0;
    }
  return -1;
}

const char *moe_config_preset_names(void) {
  return "gptoss20b, qwen3moe, mini, tiny_mixtral, tiny_qwen3";
}

int moe_config_check(const MoeConfig *c, char *err, size_t errlen) {
  const struct { const char *f; int v; } pos[] = {
      {"num_hidden_layers", c->L}, {"hidden_size", c->D}, {"num_attention_heads", c->H},
      {"num_key_value_heads", c->H_kv}, {"head_dim", c->head_dim}, {"num_experts", c->E},
      {"num_experts_per_tok", c->top_k}, {"intermediate_size", c->F}, {"vocab_size", c->V}};
  for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
    if (pos[i].v < 1 || pos[i].v > (1 << 22)) FAIL("%s: %d is out of range 1..4194304", pos[i].f, pos[i].v);
  if (c->V < 2) FAIL("vocab_size: %d, need at least 2", c->V);
  if (c->H % c->H_kv) FAIL("num_key_value_heads: %d does not divide num_attention_heads %d", c->H_kv, c->H);
  if (c->head_dim % 2) FAIL("head_dim: %d is odd (RoPE rotates halves)", c->head_dim);
  if (c->top_k > c->E) FAIL("num_experts_per_tok: %d > %d experts", c->top_k, c->E);
  if (!(c->rms_eps > 0)) FAIL("rms_norm_eps: %g, need > 0", c->rms_eps);
  if (!(c->rope_theta > 0)) FAIL("rope_theta: %g, need > 0", c->rope_theta);
  const double big = (double)(1ull << 40);
  if ((double)c->V * c->D >= big || (double)c->F * c->D >= big ||
      (double)c->H * c->head_dim * c->D >= big || (double)c->E * c->F * c->D * 2 >= big)
    FAIL("hidden_size: %d gives a tensor of 2^40 elements or more", c->D);
  return 0;
}

/* ---- Hugging Face config.json -------------------------------------------------------- */
static int get_int(const GtlJson *j, const char *key, int required, int dflt, int *out,
                   char *err, size_t errlen) {
  const GtlJson *v = gtl_json_get(j, key);
  if (!v || v->type == GTL_JSON_NULL) {
    if (required) FAIL("config.json: %s: missing", key);
    *out = dflt;
    return 0;
  }
  if (v->type != GTL_JSON_NUM || v->num != floor(v->num) || v->num < 0 || v->num > 2147483647.0)
    FAIL("config.json: %s: need a non-negative integer", key);
  *out = (int)v->num;
  return 0;
}

static int get_num(const GtlJson *j, const char *key, double dflt, double *out, char *err,
                   size_t errlen) {
  const GtlJson *v = gtl_json_get(j, key);
  if (!v || v->type == GTL_JSON_NULL) {
    *out = dflt;
    return 0;
  }
  if (v->type != GTL_JSON_NUM) FAIL("config.json: %s: need a number", key);
  *out = v->num;
  return 0;
}

static int get_bool(const GtlJson *j, const char *key, int dflt, int *out, char *err,
                    size_t errlen) {
  const GtlJson *v = gtl_json_get(j, key);
  if (!v || v->type == GTL_JSON_NULL) {
    *out = dflt;
    return 0;
  }
  if (v->type != GTL_JSON_BOOL) FAIL("config.json: %s: need true or false", key);
  *out = v->num != 0;
  return 0;
}

/* rope_theta at the top level (transformers v4), or rope_parameters / rope_scaling with
 * rope_type "default" (v5 keeps rope_theta inside rope_parameters). */
static int get_rope(const GtlJson *j, MoeConfig *c, char *err, size_t errlen) {
  const char *keys[] = {"rope_scaling", "rope_parameters"};
  int have = 0;
  const GtlJson *top = gtl_json_get(j, "rope_theta");
  if (top && top->type == GTL_JSON_NUM) {
    c->rope_theta = top->num;
    have = 1;
  }
  for (int i = 0; i < 2; i++) {
    const GtlJson *r = gtl_json_get(j, keys[i]);
    if (!r || r->type == GTL_JSON_NULL) continue;
    if (r->type != GTL_JSON_OBJ) FAIL("config.json: %s: need an object or null", keys[i]);
    const char *type = gtl_json_str(r, "rope_type");
    if (!type) type = gtl_json_str(r, "type");
    if (type && strcmp(type, "default") != 0)
      FAIL("config.json: %s.rope_type: \"%s\" is not supported (only \"default\" RoPE)", keys[i], type);
    const GtlJson *t = gtl_json_get(r, "rope_theta");
    if (t && t->type == GTL_JSON_NUM) {
      c->rope_theta = t->num;
      have = 1;
    }
    double prf = gtl_json_num(r, "partial_rotary_factor", 1.0);
    if (prf != 1.0) FAIL("config.json: %s.partial_rotary_factor: %g is not supported (need 1)", keys[i], prf);
  }
  double prf = gtl_json_num(j, "partial_rotary_factor", 1.0);
  if (prf != 1.0) FAIL("config.json: partial_rotary_factor: %g is not supported (need 1)", prf);
  if (!have) c->rope_theta = c->arch == MOE_ARCH_QWEN3 ? 10000.0 : 1000000.0; /* HF defaults */
  return 0;
}

int moe_config_from_hf(const GtlJson *j, MoeConfig *c, char *err, size_t errlen) {
  if (!j || j->type != GTL_JSON_OBJ) FAIL("config.json: not a JSON object");
  memset(c, 0, sizeof *c);
  snprintf(c->name, sizeof c->name, "hf");
  const GtlJson *archs = gtl_json_get(j, "architectures");
  const char *arch = archs && archs->type == GTL_JSON_ARR && archs->n == 1
                         ? (gtl_json_at(archs, 0)->type == GTL_JSON_STR ? gtl_json_at(archs, 0)->str : NULL)
                         : NULL;
  const char *mt = gtl_json_str(j, "model_type");
  if ((arch && !strcmp(arch, "MixtralForCausalLM")) || (!arch && mt && !strcmp(mt, "mixtral")))
    c->arch = MOE_ARCH_MIXTRAL;
  else if ((arch && !strcmp(arch, "Qwen3MoeForCausalLM")) || (!arch && mt && !strcmp(mt, "qwen3_moe")))
    c->arch = MOE_ARCH_QWEN3;
  else
    FAIL("config.json: architectures: \"%s\" is not supported (MixtralForCausalLM, Qwen3MoeForCausalLM)",
         arch ? arch : mt ? mt : "(none)");
  const int q3 = c->arch == MOE_ARCH_QWEN3;

  /* experts: Qwen3MoeConfig says num_experts, MixtralConfig num_local_experts; transformers
   * v5 saves Qwen3-MoE's as num_local_experts too */
  const char *e_key = q3 ? "num_experts" : "num_local_experts", *e_alt = q3 ? "num_local_experts" : "num_experts";
  if (!gtl_json_get(j, e_key) && gtl_json_get(j, e_alt)) e_key = e_alt;
  if (get_int(j, "hidden_size", 1, 0, &c->D, err, errlen) ||
      get_int(j, "num_hidden_layers", 1, 0, &c->L, err, errlen) ||
      get_int(j, "num_attention_heads", 1, 0, &c->H, err, errlen) ||
      get_int(j, "num_key_value_heads", 0, c->H, &c->H_kv, err, errlen) ||
      get_int(j, "vocab_size", 1, 0, &c->V, err, errlen) ||
      get_int(j, e_key, 1, 0, &c->E, err, errlen) ||
      get_int(j, "num_experts_per_tok", 1, 0, &c->top_k, err, errlen) ||
      get_int(j, q3 ? "moe_intermediate_size" : "intermediate_size", 1, 0, &c->F, err, errlen))
    return -1;
  if (c->H < 1) FAIL("config.json: num_attention_heads: need >= 1");
  if (get_int(j, "head_dim", 0, c->D / c->H, &c->head_dim, err, errlen)) return -1;
  if (get_num(j, "rms_norm_eps", q3 ? 1e-6 : 1e-5, &c->rms_eps, err, errlen) ||
      get_bool(j, "tie_word_embeddings", 0, &c->tie_embeddings, err, errlen))
    return -1;
  if (q3) {
    if (get_bool(j, "norm_topk_prob", 0, &c->norm_topk_prob, err, errlen)) return -1;
    c->qk_norm = 1;
  } else {
    c->norm_topk_prob = 1; /* MixtralSparseMoeBlock renormalizes the top-k weights always */
  }
  if (get_rope(j, c, err, errlen)) return -1;

  const char *act = gtl_json_str(j, "hidden_act");
  if (act && strcmp(act, "silu") != 0) FAIL("config.json: hidden_act: \"%s\" is not supported (need silu)", act);
  int bias = 0;
  if (get_bool(j, "attention_bias", 0, &bias, err, errlen)) return -1;
  if (bias) FAIL("config.json: attention_bias: true is not supported (projections have no bias)");
  if (q3) {
    int step = 1, sw = 0;
    if (get_int(j, "decoder_sparse_step", 0, 1, &step, err, errlen)) return -1;
    if (step != 1) FAIL("config.json: decoder_sparse_step: %d is not supported (every layer must be MoE: 1)", step);
    const GtlJson *mlp = gtl_json_get(j, "mlp_only_layers");
    if (mlp && mlp->type != GTL_JSON_NULL && !(mlp->type == GTL_JSON_ARR && mlp->n == 0))
      FAIL("config.json: mlp_only_layers: dense layers are not supported (need [])");
    if (get_bool(j, "use_sliding_window", 0, &sw, err, errlen)) return -1;
    if (sw) FAIL("config.json: use_sliding_window: true is not supported");
  } else {
    int sw = 0;
    if (get_int(j, "sliding_window", 0, 0, &sw, err, errlen)) return -1;
    c->sliding_window = sw;
  }
  char e2[240];
  if (moe_config_check(c, e2, sizeof e2)) FAIL("config.json: %s", e2);
  return 0;
}

int moe_config_read(const char *path, MoeConfig *c, char *err, size_t errlen) {
  char e2[512];
  GtlJson *j = gtl_json_parse_file(path, e2, sizeof e2);
  if (!j) FAIL("%s", e2);
  int rc = moe_config_from_hf(j, c, err, errlen);
  gtl_json_free(j);
  return rc;
}

int moe_config_write(const char *path, const MoeConfig *c, char *err, size_t errlen) {
  FILE *f = fopen(path, "w");
  if (!f) FAIL("%s: %s", path, strerror(errno));
  const int q3 = c->arch == MOE_ARCH_QWEN3;
  fprintf(f, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n",
          q3 ? "Qwen3MoeForCausalLM" : "MixtralForCausalLM", q3 ? "qwen3_moe" : "mixtral");
  fprintf(f, "  \"hidden_size\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_attention_heads\": %d,\n"
             "  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n  \"vocab_size\": %d,\n",
          c->D, c->L, c->H, c->H_kv, c->head_dim, c->V);
  if (q3)
    fprintf(f, "  \"num_experts\": %d,\n  \"moe_intermediate_size\": %d,\n  \"intermediate_size\": %d,\n"
               "  \"norm_topk_prob\": %s,\n  \"decoder_sparse_step\": 1,\n  \"mlp_only_layers\": [],\n"
               "  \"use_sliding_window\": false,\n  \"attention_bias\": false,\n",
            c->E, c->F, c->F, c->norm_topk_prob ? "true" : "false");
  else
    fprintf(f, "  \"num_local_experts\": %d,\n  \"intermediate_size\": %d,\n  \"sliding_window\": null,\n",
            c->E, c->F);
  fprintf(f, "  \"num_experts_per_tok\": %d,\n  \"hidden_act\": \"silu\",\n  \"rms_norm_eps\": %.17g,\n"
             "  \"rope_theta\": %.17g,\n  \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": %.17g},\n"
             "  \"max_position_embeddings\": 32768,\n  \"tie_word_embeddings\": %s,\n"
             "  \"attention_dropout\": 0.0,\n  \"torch_dtype\": \"bfloat16\"\n}\n",
          c->top_k, c->rms_eps, c->rope_theta, c->rope_theta, c->tie_embeddings ? "true" : "false");
  if (fclose(f) != 0) FAIL("%s: %s", path, strerror(errno));
  return 0;
}

/* ---- sizes ----------------------------------------------------------------------------- */
uint64_t moe_params_attn(const MoeConfig *c) {
  const uint64_t D = (uint64_t)c->D, q = (uint64_t)c->H * c->head_dim,
                 kv = (uint64_t)c->H_kv * c->head_dim;
  return D * q * 2 + D * kv * 2 + 2 * D + (c->qk_norm ? 2ull * c->head_dim : 0);
}

uint64_t moe_params_expert(const MoeConfig *c) { return 3ull * c->F * c->D; }

uint64_t moe_params_total(const MoeConfig *c) {
  const uint64_t per_layer = moe_params_attn(c) + (uint64_t)c->E * c->D + c->E * moe_params_expert(c);
  return (uint64_t)c->V * c->D * (c->tie_embeddings ? 1 : 2) + c->L * per_layer + c->D;
}

uint64_t moe_params_active(const MoeConfig *c) {
  const uint64_t per_layer = moe_params_attn(c) + (uint64_t)c->E * c->D + c->top_k * moe_params_expert(c);
  return c->L * per_layer + (uint64_t)c->V * c->D + 2ull * c->D;
}

double moe_expected_experts(int E, int top_k, int B) {
  return (double)E * (1.0 - pow(1.0 - (double)top_k / E, (double)B));
}

double moe_step_bytes(const MoeConfig *c, int B, double ctx, int w_bytes, int kv_bytes) {
  const double experts = moe_expected_experts(c->E, c->top_k, B);
  const double per_layer = (double)moe_params_attn(c) + (double)c->E * c->D +
                           experts * (double)moe_params_expert(c);
  const double weights = c->L * per_layer + (double)c->V * c->D + c->D + (double)B * c->D;
  const double kv_row = 2.0 * c->H_kv * c->head_dim * c->L; /* K and V of one position */
  return weights * w_bytes + (double)B * kv_row * (ctx + 1.0) * kv_bytes;
}
