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

typedef struct { /* the shape fields of a MoeConfig; the rest is set by moe_config_preset */
  const char *name;
  MoeArch arch;
  int L, D, H, H_kv, head_dim, E, top_k, F, V, qk_norm, norm_topk_prob, tie_embeddings;
  double rms_eps, rope_theta;
  int64_t sliding_window;
} Preset;

/* name, arch, L, D, H, H_kv, head_dim, E, top_k, F, V, qk_norm, norm_topk, tied, eps, theta;
 * gpt-oss presets get the rest of gpt-oss's semantics from gptoss_semantics below. */
static const Preset presets[] = {
    /* openai/gpt-oss-20b and -120b (their HF config.json: rope_theta 150000, eps 1e-5) */
    {"gptoss20b", MOE_ARCH_GPTOSS, 24, 2880, 64, 8, 64, 32, 4, 2880, 201088, 0, 1, 0, 1e-5,
      150000.0, 128},
    {"gptoss120b", MOE_ARCH_GPTOSS, 36, 2880, 64, 8, 64, 128, 4, 2880, 201088, 0, 1, 0, 1e-5,
      150000.0, 128},
    /* gpt-oss-20b's shapes with Mixtral semantics (what layer 00 computes today) */
    {"gptoss20b_mixtral", MOE_ARCH_MIXTRAL, 24, 2880, 64, 8, 64, 32, 4, 2880, 201088, 0, 1, 0,
      1e-5, 150000.0, 0},
    /* Qwen3-30B-A3B's shapes (its HF config: rope_theta 1e6, eps 1e-6, norm_topk_prob) */
    {"qwen3moe", MOE_ARCH_QWEN3, 48, 2048, 32, 4, 128, 128, 8, 768, 151936, 1, 1, 0, 1e-6,
      1000000.0, 0},
    /* ch12's mini decode step uses the same shapes */
    {"mini", MOE_ARCH_MIXTRAL, 4, 256, 8, 2, 32, 8, 2, 512, 2048, 0, 1, 0, 1e-6, 10000.0, 0},
    /* test models of tests/fixtures/: head_dim != D/H, GQA 4:1, tied embeddings, and
     * Qwen3 without renormalization of the top-k probabilities */
    {"tiny_mixtral", MOE_ARCH_MIXTRAL, 2, 64, 4, 2, 16, 4, 2, 96, 128, 0, 1, 0, 1e-5, 10000.0, 0},
    {"tiny_qwen3", MOE_ARCH_QWEN3, 2, 64, 4, 1, 32, 8, 3, 48, 128, 1, 0, 1, 1e-6, 1000000.0, 0},
    /* gpt-oss's semantics at test size: window 128 on layer 0, full attention on layer 1,
     * the real YaRN settings; D and F multiples of 32 (MXFP4 blocks) */
    {"tiny_gptoss", MOE_ARCH_GPTOSS, 2, 64, 4, 2, 16, 4, 2, 64, 128, 0, 1, 0, 1e-5, 150000.0, 128},
};
#define N_PRESETS (int)(sizeof presets / sizeof presets[0])

/* GptOssConfig's defaults (transformers configuration_gpt_oss.py) for everything but the
 * shapes: biases everywhere, sinks, layer_types alternating sliding/full from layer 0,
 * YaRN factor 32 (beta 32/1, original 4096, truncate false), clamped SwiGLU 7.0 / 1.702. */
static void gptoss_semantics(MoeConfig *c) {
  c->norm_topk_prob = 1;
  c->attn_bias = c->attn_sinks = c->router_bias = c->expert_bias = 1;
  c->act = MOE_ACT_SWIGLU_CLAMP;
  c->swiglu_limit = 7.0;
  c->swiglu_alpha = 1.702;
  c->rope_type = MOE_ROPE_YARN;
  c->yarn_factor = 32.0;
  c->yarn_beta_fast = 32.0;
  c->yarn_beta_slow = 1.0;
  c->yarn_attn_factor = 0.1 * log(32.0) + 1.0;
  c->yarn_orig_max_pos = 4096;
  c->yarn_truncate = 0;
  c->max_pos = 131072;
  c->n_layer_types = c->L <= MOE_MAX_LAYER_TYPES ? c->L : 0;
  for (int l = 0; l < c->n_layer_types; l++) c->layer_sliding[l] = (unsigned char)(l % 2 == 0);
}

int moe_config_preset(const char *name, MoeConfig *c) {
  for (int i = 0; i < N_PRESETS; i++)
    if (name && strcmp(name, presets[i].name) == 0) {
      const Preset *p = &presets[i];
      memset(c, 0, sizeof *c);
      snprintf(c->name, sizeof c->name, "%s", p->name);
      c->arch = p->arch;
      c->L = p->L;
      c->D = p->D;
      c->H = p->H;
      c->H_kv = p->H_kv;
      c->head_dim = p->head_dim;
      c->E = p->E;
      c->top_k = p->top_k;
      c->F = p->F;
      c->V = p->V;
      c->qk_norm = p->qk_norm;
      c->norm_topk_prob = p->norm_topk_prob;
      c->tie_embeddings = p->tie_embeddings;
      c->rms_eps = p->rms_eps;
      c->rope_theta = p->rope_theta;
      c->sliding_window = p->sliding_window;
      if (c->arch == MOE_ARCH_GPTOSS) gptoss_semantics(c);
      return 0;
    }
  return -1;
}

const char *moe_config_preset_names(void) {
  return "gptoss20b, gptoss120b, gptoss20b_mixtral, qwen3moe, mini, tiny_mixtral, tiny_qwen3, tiny_gptoss";
}

const char *moe_arch_name(MoeArch a) {
  return a == MOE_ARCH_QWEN3 ? "Qwen3-MoE" : a == MOE_ARCH_GPTOSS ? "gpt-oss" : "Mixtral";
}

int64_t moe_layer_window(const MoeConfig *c, int l) {
  if (c->sliding_window <= 0) return 0;
  if (c->n_layer_types == 0) return c->sliding_window;
  return l >= 0 && l < c->n_layer_types && c->layer_sliding[l] ? c->sliding_window : 0;
}

/* The dimension index whose wavelength makes num_rot turns over orig positions. */
static double yarn_dim(double num_rot, int dim, double base, double orig) {
  return dim * log(orig / (num_rot * 2.0 * 3.14159265358979323846)) / (2.0 * log(base));
}

double moe_rope_inv_freq(const MoeConfig *c, double *inv_freq, double *low, double *high) {
  const int dim = c->head_dim, half = dim / 2;
  if (c->rope_type != MOE_ROPE_YARN) {
    for (int i = 0; i < half; i++) inv_freq[i] = pow(c->rope_theta, -2.0 * i / dim);
    if (low) *low = 0;
    if (high) *high = 0;
    return 1.0;
  }
  double lo = yarn_dim(c->yarn_beta_fast, dim, c->rope_theta, c->yarn_orig_max_pos);
  double hi = yarn_dim(c->yarn_beta_slow, dim, c->rope_theta, c->yarn_orig_max_pos);
  if (c->yarn_truncate) {
    lo = floor(lo);
    hi = ceil(hi);
  }
  lo = lo > 0 ? lo : 0;
  hi = hi < dim - 1 ? hi : dim - 1;
  if (low) *low = lo;
  if (high) *high = hi;
  const double span = hi == lo ? 0.001 : hi - lo; /* transformers' guard against 0 */
  for (int i = 0; i < half; i++) {
    const double pf = pow(c->rope_theta, 2.0 * i / dim);
    double r = (i - lo) / span; /* 0: extrapolate (keep 1/pf), 1: interpolate (1/(factor·pf)) */
    r = r < 0 ? 0 : r > 1 ? 1 : r;
    inv_freq[i] = (1.0 / pf) * (1.0 - r) + (1.0 / (c->yarn_factor * pf)) * r;
  }
  return c->yarn_attn_factor;
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
  if (c->sliding_window < 0) FAIL("sliding_window: %lld, need >= 0", (long long)c->sliding_window);
  if (c->n_layer_types && c->n_layer_types != c->L)
    FAIL("layer_types: %d entries for %d layers", c->n_layer_types, c->L);
  if (c->rope_type == MOE_ROPE_YARN &&
      !(c->yarn_factor >= 1 && c->yarn_beta_fast > 0 && c->yarn_beta_slow > 0 && c->yarn_orig_max_pos > 0 &&
        c->yarn_attn_factor > 0))
    FAIL("rope_scaling: YaRN needs factor >= 1, beta_fast, beta_slow, original_max_position_embeddings > 0");
  if (c->act == MOE_ACT_SWIGLU_CLAMP && !(c->swiglu_limit > 0 && c->swiglu_alpha > 0))
    FAIL("swiglu_limit: %g / swiglu_alpha %g, need > 0", c->swiglu_limit, c->swiglu_alpha);
  if (c->expert_format == MOE_WF_MXFP4 && (c->D % 32 || c->F % 32))
    FAIL("quantization_config: MXFP4 experts need hidden_size (%d) and intermediate_size (%d) "
         "divisible by 32", c->D, c->F);
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

/* YaRN's settings from a rope_scaling / rope_parameters object r (gpt-oss only). */
static int get_yarn(const GtlJson *r, const char *key, MoeConfig *c, char *err, size_t errlen) {
  const GtlJson *f = gtl_json_get(r, "factor");
  if (!f || f->type != GTL_JSON_NUM) FAIL("config.json: %s.factor: missing (YaRN needs it)", key);
  c->rope_type = MOE_ROPE_YARN;
  c->yarn_factor = f->num;
  c->yarn_beta_fast = gtl_json_num(r, "beta_fast", 32.0);
  c->yarn_beta_slow = gtl_json_num(r, "beta_slow", 1.0);
  const GtlJson *o = gtl_json_get(r, "original_max_position_embeddings");
  c->yarn_orig_max_pos = o && o->type == GTL_JSON_NUM ? (int)o->num : c->max_pos;
  int trunc = 1; /* transformers: truncate defaults to True when the key is absent */
  if (get_bool(r, "truncate", 1, &trunc, err, errlen)) return -1;
  c->yarn_truncate = trunc;
  const char *unsup[] = {"mscale", "mscale_all_dim"};
  for (int i = 0; i < 2; i++) {
    const GtlJson *m = gtl_json_get(r, unsup[i]);
    if (m && m->type != GTL_JSON_NULL) FAIL("config.json: %s.%s: not supported (gpt-oss has none)", key, unsup[i]);
  }
  const GtlJson *af = gtl_json_get(r, "attention_factor");
  c->yarn_attn_factor = af && af->type == GTL_JSON_NUM ? af->num
                        : c->yarn_factor <= 1 ? 1.0 : 0.1 * log(c->yarn_factor) + 1.0;
  /* Some transformers versions take factor = max_position_embeddings / original when
   * both are given: refuse a config on which versions would disagree. */
  if (o && c->max_pos && fabs((double)c->max_pos / c->yarn_orig_max_pos - c->yarn_factor) > 1e-9)
    FAIL("config.json: %s.factor: %g differs from max_position_embeddings / original_max_position_embeddings "
         "= %g (transformers versions differ on which one wins)", key, c->yarn_factor,
         (double)c->max_pos / c->yarn_orig_max_pos);
  return 0;
}

/* rope_theta at the top level (transformers v4), or rope_parameters / rope_scaling with
 * rope_type "default" (v5 keeps rope_theta inside rope_parameters); gpt-oss: "yarn". */
static int get_rope(const GtlJson *j, MoeConfig *c, char *err, size_t errlen) {
  const char *keys[] = {"rope_scaling", "rope_parameters"};
  const int oss = c->arch == MOE_ARCH_GPTOSS;
  int have = 0, seen = 0;
  const GtlJson *top = gtl_json_get(j, "rope_theta");
  if (top && top->type == GTL_JSON_NUM) {
    c->rope_theta = top->num;
    have = 1;
  }
  for (int i = 0; i < 2; i++) {
    const GtlJson *r = gtl_json_get(j, keys[i]);
    if (!r || r->type == GTL_JSON_NULL) continue;
    if (r->type != GTL_JSON_OBJ) FAIL("config.json: %s: need an object or null", keys[i]);
    seen = 1;
    const char *type = gtl_json_str(r, "rope_type");
    if (!type) type = gtl_json_str(r, "type");
    if (type && oss && !strcmp(type, "yarn")) {
      if (get_yarn(r, keys[i], c, err, errlen)) return -1;
    } else if (type && strcmp(type, "default") != 0) {
      FAIL("config.json: %s.rope_type: \"%s\" is not supported (only \"default\" RoPE%s)", keys[i], type,
           oss ? " and \"yarn\"" : "");
    } else if (oss) {
      c->rope_type = MOE_ROPE_DEFAULT;
    }
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
  (void)seen; /* gpt-oss without either key keeps GptOssConfig's YaRN (already set) */
  if (!have) /* HF defaults */
    c->rope_theta = oss ? 150000.0 : c->arch == MOE_ARCH_QWEN3 ? 10000.0 : 1000000.0;
  return 0;
}

/* gpt-oss's own fields: sliding_window, layer_types, swiglu, quantization_config. */
static int get_gptoss(const GtlJson *j, MoeConfig *c, char *err, size_t errlen) {
  const GtlJson *sw = gtl_json_get(j, "sliding_window");
  if (sw && sw->type == GTL_JSON_NULL) c->sliding_window = 0;
  else {
    int w = 0;
    if (get_int(j, "sliding_window", 0, 128, &w, err, errlen)) return -1;
    c->sliding_window = w;
  }
  const GtlJson *lt = gtl_json_get(j, "layer_types");
  if (lt && lt->type != GTL_JSON_NULL) {
    if (lt->type != GTL_JSON_ARR || (int)lt->n != c->L)
      FAIL("config.json: layer_types: need a list of num_hidden_layers (%d) entries", c->L);
    if (c->L > MOE_MAX_LAYER_TYPES) FAIL("config.json: layer_types: more than %d layers", MOE_MAX_LAYER_TYPES);
    int l = 0;
    for (const GtlJson *e = lt->child; e; e = e->next, l++) {
      if (e->type == GTL_JSON_STR && !strcmp(e->str, "sliding_attention")) c->layer_sliding[l] = 1;
      else if (e->type == GTL_JSON_STR && !strcmp(e->str, "full_attention")) c->layer_sliding[l] = 0;
      else FAIL("config.json: layer_types[%d]: need \"sliding_attention\" or \"full_attention\"", l);
    }
    c->n_layer_types = c->L;
  } else if (c->L > MOE_MAX_LAYER_TYPES) {
    FAIL("config.json: num_hidden_layers: %d, at most %d for gpt-oss", c->L, MOE_MAX_LAYER_TYPES);
  }
  if (get_bool(j, "attention_bias", 1, &c->attn_bias, err, errlen) ||
      get_num(j, "swiglu_limit", 7.0, &c->swiglu_limit, err, errlen) ||
      get_num(j, "swiglu_alpha", 1.702, &c->swiglu_alpha, err, errlen))
    return -1;
  const GtlJson *q = gtl_json_get(j, "quantization_config");
  if (q && q->type != GTL_JSON_NULL) {
    const char *m = q->type == GTL_JSON_OBJ ? gtl_json_str(q, "quant_method") : NULL;
    if (!m || strcmp(m, "mxfp4") != 0)
      FAIL("config.json: quantization_config.quant_method: \"%s\" is not supported (mxfp4)", m ? m : "(none)");
    c->expert_format = MOE_WF_MXFP4;
  }
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
  else if ((arch && !strcmp(arch, "GptOssForCausalLM")) || (!arch && mt && !strcmp(mt, "gpt_oss")))
    c->arch = MOE_ARCH_GPTOSS;
  else
    FAIL("config.json: architectures: \"%s\" is not supported (MixtralForCausalLM, Qwen3MoeForCausalLM, "
         "GptOssForCausalLM)", arch ? arch : mt ? mt : "(none)");
  const int q3 = c->arch == MOE_ARCH_QWEN3, oss = c->arch == MOE_ARCH_GPTOSS;

  /* experts: Qwen3MoeConfig says num_experts, Mixtral/GptOss num_local_experts; transformers
   * v5 saves Qwen3-MoE's as num_local_experts too. gpt-oss's original config said
   * experts_per_token for num_experts_per_tok. */
  const char *e_key = q3 ? "num_experts" : "num_local_experts", *e_alt = q3 ? "num_local_experts" : "num_experts";
  if (!gtl_json_get(j, e_key) && gtl_json_get(j, e_alt)) e_key = e_alt;
  const char *k_key = oss && !gtl_json_get(j, "num_experts_per_tok") ? "experts_per_token" : "num_experts_per_tok";
  if (get_int(j, "hidden_size", 1, 0, &c->D, err, errlen) ||
      get_int(j, "num_hidden_layers", 1, 0, &c->L, err, errlen) ||
      get_int(j, "num_attention_heads", 1, 0, &c->H, err, errlen) ||
      get_int(j, "num_key_value_heads", 0, c->H, &c->H_kv, err, errlen) ||
      get_int(j, "vocab_size", 1, 0, &c->V, err, errlen) ||
      get_int(j, e_key, 1, 0, &c->E, err, errlen) ||
      get_int(j, k_key, 1, 0, &c->top_k, err, errlen) ||
      get_int(j, q3 ? "moe_intermediate_size" : "intermediate_size", 1, 0, &c->F, err, errlen) ||
      get_int(j, "max_position_embeddings", 0, 0, &c->max_pos, err, errlen))
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
    c->norm_topk_prob = 1; /* Mixtral renormalizes the top-k; gpt-oss softmaxes the top-k only */
  }
  if (oss) { /* GptOssConfig's defaults, then what the file says */
    const int L = c->L, mp = c->max_pos;
    gptoss_semantics(c);
    c->max_pos = mp ? mp : c->max_pos;
    c->n_layer_types = L <= MOE_MAX_LAYER_TYPES ? L : 0;
    if (get_gptoss(j, c, err, errlen)) return -1;
  }
  if (get_rope(j, c, err, errlen)) return -1;

  const char *act = gtl_json_str(j, "hidden_act");
  if (act && strcmp(act, "silu") != 0) FAIL("config.json: hidden_act: \"%s\" is not supported (need silu)", act);
  if (!oss) {
    int bias = 0;
    if (get_bool(j, "attention_bias", 0, &bias, err, errlen)) return -1;
    if (bias) FAIL("config.json: attention_bias: true is not supported (projections have no bias)");
  }
  if (q3) {
    int step = 1, sw = 0;
    if (get_int(j, "decoder_sparse_step", 0, 1, &step, err, errlen)) return -1;
    if (step != 1) FAIL("config.json: decoder_sparse_step: %d is not supported (every layer must be MoE: 1)", step);
    const GtlJson *mlp = gtl_json_get(j, "mlp_only_layers");
    if (mlp && mlp->type != GTL_JSON_NULL && !(mlp->type == GTL_JSON_ARR && mlp->n == 0))
      FAIL("config.json: mlp_only_layers: dense layers are not supported (need [])");
    if (get_bool(j, "use_sliding_window", 0, &sw, err, errlen)) return -1;
    if (sw) FAIL("config.json: use_sliding_window: true is not supported");
  } else if (!oss) {
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

/* gpt-oss's config.json, every field of openai/gpt-oss-20b's (its dtype bf16). */
static void write_gptoss(FILE *f, const MoeConfig *c) {
  fprintf(f, "{\n  \"architectures\": [\"GptOssForCausalLM\"],\n  \"model_type\": \"gpt_oss\",\n"
             "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
             "  \"num_local_experts\": %d,\n  \"num_experts_per_tok\": %d,\n  \"experts_per_token\": %d,\n"
             "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
             "  \"vocab_size\": %d,\n  \"rms_norm_eps\": %.17g,\n  \"rope_theta\": %.17g,\n",
          c->D, c->F, c->L, c->E, c->top_k, c->top_k, c->H, c->H_kv, c->head_dim, c->V, c->rms_eps, c->rope_theta);
  if (c->rope_type == MOE_ROPE_YARN)
    fprintf(f, "  \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": %.17g, \"beta_fast\": %.17g, "
               "\"beta_slow\": %.17g, \"original_max_position_embeddings\": %d, \"truncate\": %s},\n",
            c->yarn_factor, c->yarn_beta_fast, c->yarn_beta_slow, c->yarn_orig_max_pos,
            c->yarn_truncate ? "true" : "false");
  else
    fprintf(f, "  \"rope_scaling\": {\"rope_type\": \"default\"},\n");
  if (c->sliding_window) fprintf(f, "  \"sliding_window\": %lld,\n", (long long)c->sliding_window);
  else fprintf(f, "  \"sliding_window\": null,\n");
  fprintf(f, "  \"layer_types\": [");
  for (int l = 0; l < c->L; l++)
    fprintf(f, "%s\"%s\"", l ? ", " : "", moe_layer_window(c, l) ? "sliding_attention" : "full_attention");
  fprintf(f, "],\n  \"attention_bias\": %s,\n  \"attention_dropout\": 0.0,\n  \"hidden_act\": \"silu\",\n"
             "  \"swiglu_limit\": %.17g,\n  \"swiglu_alpha\": %.17g,\n  \"initializer_range\": 0.02,\n"
             "  \"max_position_embeddings\": %d,\n  \"tie_word_embeddings\": %s,\n  \"router_aux_loss_coef\": 0.9,\n"
             "  \"output_router_logits\": false,\n  \"use_cache\": true,\n  \"eos_token_id\": %d,\n"
             "  \"pad_token_id\": %d,\n",
          c->attn_bias ? "true" : "false", c->swiglu_limit, c->swiglu_alpha, c->max_pos ? c->max_pos : 131072,
          c->tie_embeddings ? "true" : "false", c->V > 200002 ? 200002 : c->V - 1, c->V > 199999 ? 199999 : c->V - 2);
  if (c->expert_format == MOE_WF_MXFP4)
    fprintf(f, "  \"quantization_config\": {\"quant_method\": \"mxfp4\", \"modules_to_not_convert\": "
               "[\"model.layers.*.self_attn\", \"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"]},\n");
  fprintf(f, "  \"torch_dtype\": \"bfloat16\"\n}\n");
}

int moe_config_write(const char *path, const MoeConfig *c, char *err, size_t errlen) {
  FILE *f = fopen(path, "w");
  if (!f) FAIL("%s: %s", path, strerror(errno));
  if (c->arch == MOE_ARCH_GPTOSS) {
    write_gptoss(f, c);
    if (fclose(f) != 0) FAIL("%s: %s", path, strerror(errno));
    return 0;
  }
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
  return D * q * 2 + D * kv * 2 + 2 * D + (c->qk_norm ? 2ull * c->head_dim : 0) +
         (c->attn_bias ? q + 2 * kv + D : 0) + (c->attn_sinks ? (uint64_t)c->H : 0);
}

static uint64_t expert_matrix(const MoeConfig *c) { return 3ull * c->F * c->D; }
static uint64_t expert_biases(const MoeConfig *c) { return c->expert_bias ? 2ull * c->F + c->D : 0; }
static uint64_t router_params(const MoeConfig *c) {
  return (uint64_t)c->E * c->D + (c->router_bias ? (uint64_t)c->E : 0);
}

uint64_t moe_params_expert(const MoeConfig *c) { return expert_matrix(c) + expert_biases(c); }

uint64_t moe_params_total(const MoeConfig *c) {
  const uint64_t per_layer = moe_params_attn(c) + router_params(c) + c->E * moe_params_expert(c);
  return (uint64_t)c->V * c->D * (c->tie_embeddings ? 1 : 2) + c->L * per_layer + c->D;
}

uint64_t moe_params_active(const MoeConfig *c) {
  const uint64_t per_layer = moe_params_attn(c) + router_params(c) + c->top_k * moe_params_expert(c);
  return c->L * per_layer + (uint64_t)c->V * c->D + 2ull * c->D;
}

double moe_expected_experts(int E, int top_k, int B) {
  return (double)E * (1.0 - pow(1.0 - (double)top_k / E, (double)B));
}

double moe_weight_bits(MoeWeightFormat f) {
  return f == MOE_WF_MXFP4 ? 4.25 : f == MOE_WF_FP8 ? 8.0 : 16.0;
}

double moe_kv_positions(const MoeConfig *c, double ctx) {
  if (c->sliding_window <= 0) return c->L * (ctx + 1.0);
  double n = 0;
  for (int l = 0; l < c->L; l++) {
    const double w = (double)moe_layer_window(c, l);
    n += w > 0 && w < ctx + 1.0 ? w : ctx + 1.0;
  }
  return n;
}

double moe_step_bytes_fmt(const MoeConfig *c, int B, double ctx, MoeWeightFormat expert_fmt,
                          MoeWeightFormat dense_fmt, int kv_bytes) {
  const double experts = moe_expected_experts(c->E, c->top_k, B);
  const double eb = moe_weight_bits(expert_fmt) / 8, db = moe_weight_bits(dense_fmt) / 8;
  const double dense_layer = (double)moe_params_attn(c) + (double)router_params(c) +
                             experts * (double)expert_biases(c);
  const double dense = c->L * dense_layer + (double)c->V * c->D + c->D + (double)B * c->D;
  const double kv_row = 2.0 * c->H_kv * c->head_dim; /* K and V of one position in one layer */
  return dense * db + c->L * experts * (double)expert_matrix(c) * eb +
         (double)B * kv_row * moe_kv_positions(c, ctx) * kv_bytes;
}

double moe_step_bytes(const MoeConfig *c, int B, double ctx, int w_bytes, int kv_bytes) {
  const double experts = moe_expected_experts(c->E, c->top_k, B);
  const double per_layer = (double)moe_params_attn(c) + (double)router_params(c) +
                           experts * (double)moe_params_expert(c);
  const double weights = c->L * per_layer + (double)c->V * c->D + c->D + (double)B * c->D;
  const double kv_row = 2.0 * c->H_kv * c->head_dim; /* K and V of one position in one layer */
  return weights * w_bytes + (double)B * kv_row * moe_kv_positions(c, ctx) * kv_bytes;
}
