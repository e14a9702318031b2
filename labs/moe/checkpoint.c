/* checkpoint.c — layout, synthetic weights and the HF checkpoint loader (see
 * checkpoint.h; the file plan is in ckpt_plan.c, the writer in ckpt_writer.c). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "convert.h"
#include "json.h"
#include "mxfp4.h"
#include "rng.h"

#define FAIL(...)                                            \
  do {                                                       \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);   \
    return -1;                                               \
  } while (0)

/* ---- layout ------------------------------------------------------------------------- */
static const char *kind_names[MOE_KIND_COUNT] = {
    "embed", "attn_norm", "q", "k", "v", "o", "q_norm", "k_norm", "ffn_norm", "router",
    "gate", "up", "down", "final_norm", "lm_head", "q_bias", "k_bias", "v_bias", "o_bias",
    "sinks", "router_bias", "gate_bias", "up_bias", "down_bias"};
const char *moe_kind_name(MoeKind k) { return (unsigned)k < MOE_KIND_COUNT ? kind_names[k] : "?"; }

uint64_t moe_tensor_numel(const MoeTensor *t) {
  return (uint64_t)t->rows * (uint64_t)(t->cols ? t->cols : 1);
}

int moe_tensor_index(const MoeLayout *lay, MoeKind k, int layer, int expert) {
  const MoeConfig *c = &lay->cfg;
  const int qk = c->qk_norm ? 2 : 0, tail = 1 + c->L * lay->per_layer;
  const int base = 1 + layer * lay->per_layer;
  /* gpt-oss's tensors follow the experts, so the indices above stay Mixtral's */
  const int ab = base + 7 + qk + 3 * c->E, sk = ab + (c->attn_bias ? 4 : 0), rb = sk + (c->attn_sinks ? 1 : 0),
            eb = rb + (c->router_bias ? 1 : 0);
  switch (k) {
    case MOE_EMBED: return 0;
    case MOE_FINAL_NORM: return tail;
    case MOE_LM_HEAD: return c->tie_embeddings ? 0 : tail + 1;
    case MOE_ATTN_NORM: return base;
    case MOE_Q: return base + 1;
    case MOE_K: return base + 2;
    case MOE_V: return base + 3;
    case MOE_O: return base + 4;
    case MOE_Q_NORM: return qk ? base + 5 : -1;
    case MOE_K_NORM: return qk ? base + 6 : -1;
    case MOE_FFN_NORM: return base + 5 + qk;
    case MOE_ROUTER: return base + 6 + qk;
    case MOE_GATE: return base + 7 + qk + 3 * expert;
    case MOE_UP: return base + 8 + qk + 3 * expert;
    case MOE_DOWN: return base + 9 + qk + 3 * expert;
    case MOE_Q_BIAS: return c->attn_bias ? ab : -1;
    case MOE_K_BIAS: return c->attn_bias ? ab + 1 : -1;
    case MOE_V_BIAS: return c->attn_bias ? ab + 2 : -1;
    case MOE_O_BIAS: return c->attn_bias ? ab + 3 : -1;
    case MOE_SINKS: return c->attn_sinks ? sk : -1;
    case MOE_ROUTER_BIAS: return c->router_bias ? rb : -1;
    case MOE_GATE_BIAS: return c->expert_bias ? eb + 3 * expert : -1;
    case MOE_UP_BIAS: return c->expert_bias ? eb + 3 * expert + 1 : -1;
    case MOE_DOWN_BIAS: return c->expert_bias ? eb + 3 * expert + 2 : -1;
    default: return -1;
  }
}

static void set(MoeTensor *t, MoeKind k, int layer, int expert, int64_t rows, int64_t cols,
                const char *name) {
  t->kind = k;
  t->layer = layer;
  t->expert = expert;
  t->rows = rows;
  t->cols = cols;
  snprintf(t->name, sizeof t->name, "%s", name);
}

int moe_layout_build(const MoeConfig *c, MoeLayout *lay) {
  memset(lay, 0, sizeof *lay);
  lay->cfg = *c;
  const int qk = c->qk_norm ? 2 : 0, q3 = c->arch == MOE_ARCH_QWEN3, oss = c->arch == MOE_ARCH_GPTOSS;
  lay->per_layer = 7 + qk + 3 * c->E + (c->attn_bias ? 4 : 0) + (c->attn_sinks ? 1 : 0) +
                   (c->router_bias ? 1 : 0) + (c->expert_bias ? 3 * c->E : 0);
  lay->n = 2 + c->L * lay->per_layer + (c->tie_embeddings ? 0 : 1);
  lay->t = (MoeTensor *)calloc((size_t)lay->n, sizeof(MoeTensor));
  if (!lay->t) return -1;
  const int64_t D = c->D, Q = (int64_t)c->H * c->head_dim, KV = (int64_t)c->H_kv * c->head_dim;
  char nm[96];
  set(&lay->t[0], MOE_EMBED, -1, -1, c->V, D, "model.embed_tokens.weight");
  for (int l = 0; l < c->L; l++) {
#define NAME(...) (snprintf(nm, sizeof nm, __VA_ARGS__), nm)
#define AT(k, e) &lay->t[moe_tensor_index(lay, k, l, e)]
    set(AT(MOE_ATTN_NORM, 0), MOE_ATTN_NORM, l, -1, D, 0, NAME("model.layers.%d.input_layernorm.weight", l));
    set(AT(MOE_Q, 0), MOE_Q, l, -1, Q, D, NAME("model.layers.%d.self_attn.q_proj.weight", l));
    set(AT(MOE_K, 0), MOE_K, l, -1, KV, D, NAME("model.layers.%d.self_attn.k_proj.weight", l));
    set(AT(MOE_V, 0), MOE_V, l, -1, KV, D, NAME("model.layers.%d.self_attn.v_proj.weight", l));
    set(AT(MOE_O, 0), MOE_O, l, -1, D, Q, NAME("model.layers.%d.self_attn.o_proj.weight", l));
    if (qk) {
      set(AT(MOE_Q_NORM, 0), MOE_Q_NORM, l, -1, c->head_dim, 0, NAME("model.layers.%d.self_attn.q_norm.weight", l));
      set(AT(MOE_K_NORM, 0), MOE_K_NORM, l, -1, c->head_dim, 0, NAME("model.layers.%d.self_attn.k_norm.weight", l));
    }
    set(AT(MOE_FFN_NORM, 0), MOE_FFN_NORM, l, -1, D, 0, NAME("model.layers.%d.post_attention_layernorm.weight", l));
    set(AT(MOE_ROUTER, 0), MOE_ROUTER, l, -1, c->E, D,
        NAME(oss  ? "model.layers.%d.mlp.router.weight"
             : q3 ? "model.layers.%d.mlp.gate.weight" : "model.layers.%d.block_sparse_moe.gate.weight", l));
    if (c->attn_bias) {
      set(AT(MOE_Q_BIAS, 0), MOE_Q_BIAS, l, -1, Q, 0, NAME("model.layers.%d.self_attn.q_proj.bias", l));
      set(AT(MOE_K_BIAS, 0), MOE_K_BIAS, l, -1, KV, 0, NAME("model.layers.%d.self_attn.k_proj.bias", l));
      set(AT(MOE_V_BIAS, 0), MOE_V_BIAS, l, -1, KV, 0, NAME("model.layers.%d.self_attn.v_proj.bias", l));
      set(AT(MOE_O_BIAS, 0), MOE_O_BIAS, l, -1, D, 0, NAME("model.layers.%d.self_attn.o_proj.bias", l));
    }
    if (c->attn_sinks) set(AT(MOE_SINKS, 0), MOE_SINKS, l, -1, c->H, 0, NAME("model.layers.%d.self_attn.sinks", l));
    if (c->router_bias)
      set(AT(MOE_ROUTER_BIAS, 0), MOE_ROUTER_BIAS, l, -1, c->E, 0, NAME("model.layers.%d.mlp.router.bias", l));
    for (int e = 0; oss && e < c->E; e++) { /* slices of the fused tensors (see checkpoint.h) */
      set(AT(MOE_GATE, e), MOE_GATE, l, e, c->F, D, NAME("model.layers.%d.mlp.experts.gate_up_proj[%d].gate", l, e));
      set(AT(MOE_UP, e), MOE_UP, l, e, c->F, D, NAME("model.layers.%d.mlp.experts.gate_up_proj[%d].up", l, e));
      set(AT(MOE_DOWN, e), MOE_DOWN, l, e, D, c->F, NAME("model.layers.%d.mlp.experts.down_proj[%d]", l, e));
      if (!c->expert_bias) continue;
      set(AT(MOE_GATE_BIAS, e), MOE_GATE_BIAS, l, e, c->F, 0,
          NAME("model.layers.%d.mlp.experts.gate_up_proj_bias[%d].gate", l, e));
      set(AT(MOE_UP_BIAS, e), MOE_UP_BIAS, l, e, c->F, 0,
          NAME("model.layers.%d.mlp.experts.gate_up_proj_bias[%d].up", l, e));
      set(AT(MOE_DOWN_BIAS, e), MOE_DOWN_BIAS, l, e, D, 0, NAME("model.layers.%d.mlp.experts.down_proj_bias[%d]", l, e));
    }
    for (int e = 0; !oss && e < c->E; e++) {
      set(AT(MOE_GATE, e), MOE_GATE, l, e, c->F, D,
          NAME(q3 ? "model.layers.%d.mlp.experts.%d.gate_proj.weight"
                  : "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", l, e));
      set(AT(MOE_UP, e), MOE_UP, l, e, c->F, D,
          NAME(q3 ? "model.layers.%d.mlp.experts.%d.up_proj.weight"
                  : "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", l, e));
      set(AT(MOE_DOWN, e), MOE_DOWN, l, e, D, c->F,
          NAME(q3 ? "model.layers.%d.mlp.experts.%d.down_proj.weight"
                  : "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", l, e));
    }
#undef AT
#undef NAME
  }
  set(&lay->t[moe_tensor_index(lay, MOE_FINAL_NORM, 0, 0)], MOE_FINAL_NORM, -1, -1, D, 0, "model.norm.weight");
  if (!c->tie_embeddings)
    set(&lay->t[moe_tensor_index(lay, MOE_LM_HEAD, 0, 0)], MOE_LM_HEAD, -1, -1, c->V, D, "lm_head.weight");
  uint64_t off = 0;
  for (int i = 0; i < lay->n; i++) {
    lay->t[i].offset = off;
    const uint64_t n = moe_tensor_numel(&lay->t[i]);
    if (n > lay->max_numel) lay->max_numel = n;
    off += (n + 63) / 64 * 64; /* 128-byte aligned tensors: whole 16-byte vectors per row start */
  }
  lay->numel = off;
  return 0;
}

void moe_layout_free(MoeLayout *lay) {
  free(lay->t);
  memset(lay, 0, sizeof *lay);
}

/* ---- synthetic weights -------------------------------------------------------------- */
uint64_t moe_synth_seed(uint64_t seed, int tensor) {
  return gtl_splitmix64(seed ^ gtl_splitmix64(0x7E450000ull + (uint64_t)tensor));
}

void moe_synth_range(const MoeLayout *lay, int tensor, float *lo, float *hi) {
  const MoeTensor *t = &lay->t[tensor];
  float a;
  switch (t->kind) {
    case MOE_ATTN_NORM: case MOE_FFN_NORM: case MOE_FINAL_NORM: case MOE_Q_NORM: case MOE_K_NORM:
      *lo = 0.8f;
      *hi = 1.2f;
      return;
    case MOE_SINKS:
      *lo = 0.0f;
      *hi = 4.0f;
      return;
    case MOE_Q_BIAS: case MOE_K_BIAS: case MOE_V_BIAS: case MOE_O_BIAS: case MOE_ROUTER_BIAS:
    case MOE_GATE_BIAS: case MOE_UP_BIAS: case MOE_DOWN_BIAS: a = 0.5f; break;
    case MOE_GATE: case MOE_UP: /* gpt-oss: wide enough that the SwiGLU clamps fire */
      a = (lay->cfg.act == MOE_ACT_SWIGLU_CLAMP ? 3.0f : 1.0f) * sqrtf(3.0f / (float)t->cols);
      break;
    case MOE_EMBED: a = 1.0f; break;
    case MOE_LM_HEAD: a = 2.0f * sqrtf(3.0f / (float)t->cols); break;
    default: a = sqrtf(3.0f / (float)t->cols); break; /* var(U(-a,a)) = a²/3 = 1/fan_in */
  }
  *lo = -a;
  *hi = a;
}

void moe_synth_tensor(const MoeLayout *lay, int tensor, uint64_t seed, uint16_t *out) {
  float lo, hi;
  moe_synth_range(lay, tensor, &lo, &hi);
  const uint64_t s = moe_synth_seed(seed, tensor), n = moe_tensor_numel(&lay->t[tensor]);
  for (uint64_t i = 0; i < n; i++) out[i] = gtl_f32_to_bf16(gtl_uniform(s, i, lo, hi));
}

uint16_t *moe_synth_arena(const MoeLayout *lay, uint64_t seed) {
  uint16_t *a = (uint16_t *)calloc((size_t)lay->numel, sizeof(uint16_t));
  if (!a) return NULL;
  for (int i = 0; i < lay->n; i++) moe_synth_tensor(lay, i, seed, a + lay->t[i].offset);
  return a;
}

/* ---- loader ------------------------------------------------------------------------- */
static void shape_str(char *b, size_t n, int ndim, const uint64_t *s) {
  size_t o = (size_t)snprintf(b, n, "[");
  for (int i = 0; i < ndim && o < n; i++)
    o += (size_t)snprintf(b + o, n - o, "%s%llu", i ? ", " : "", (unsigned long long)s[i]);
  if (o < n) snprintf(b + o, n - o, "]");
}

static int file_exists(const char *p) {
  struct stat sb;
  return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Add path to ck's files and parse its header. */
static int add_file(MoeCheckpoint *ck, const char *path, char *err, size_t errlen) {
  const int i = ck->n_files;
  ck->path = (char **)realloc(ck->path, sizeof(char *) * (size_t)(i + 1));
  ck->fd = (int *)realloc(ck->fd, sizeof(int) * (size_t)(i + 1));
  ck->st = (GtlSafetensors *)realloc(ck->st, sizeof(GtlSafetensors) * (size_t)(i + 1));
  if (!ck->path || !ck->fd || !ck->st) FAIL("out of host memory");
  memset(&ck->st[i], 0, sizeof ck->st[i]);
  ck->path[i] = strdup(path);
  ck->fd[i] = -1;
  ck->n_files++;
  char e2[600];
  if (gtl_st_open(path, &ck->st[i], e2, sizeof e2)) FAIL("%s: %s", path, e2);
  ck->fd[i] = open(path, O_RDONLY);
  if (ck->fd[i] < 0) FAIL("%s: %s", path, strerror(errno));
  return 0;
}

static const GtlStTensor *find(const MoeCheckpoint *ck, const char *name, int *file) {
  for (int f = 0; f < ck->n_files; f++) {
    const GtlStTensor *t = gtl_st_find(&ck->st[f], name);
    if (t) {
      *file = f;
      return t;
    }
  }
  return NULL;
}

/* The files: the shards named by model.safetensors.index.json's weight_map, else
 * model.safetensors. */
static int open_files(MoeCheckpoint *ck, char *err, size_t errlen) {
  char p[1400];
  snprintf(p, sizeof p, "%s/model.safetensors.index.json", ck->dir);
  if (!file_exists(p)) {
    snprintf(p, sizeof p, "%s/model.safetensors", ck->dir);
    if (!file_exists(p)) FAIL("%s: no model.safetensors or model.safetensors.index.json", ck->dir);
    return add_file(ck, p, err, errlen);
  }
  char e2[600];
  GtlJson *j = gtl_json_parse_file(p, e2, sizeof e2);
  if (!j) FAIL("%s", e2);
  const GtlJson *map = gtl_json_get(j, "weight_map");
  if (!map || map->type != GTL_JSON_OBJ || map->n == 0) {
    gtl_json_free(j);
    FAIL("%s: weight_map: missing or empty", p);
  }
  int rc = 0;
  for (const GtlJson *m = map->child; m && !rc; m = m->next) {
    if (m->type != GTL_JSON_STR || strchr(m->str, '/')) {
      snprintf(err, errlen, "%s: weight_map.%s: need a file name in this folder", p, m->key);
      rc = -1;
      break;
    }
    int seen = 0;
    char fp[1400];
    snprintf(fp, sizeof fp, "%s/%s", ck->dir, m->str);
    for (int f = 0; f < ck->n_files && !seen; f++) seen = strcmp(ck->path[f], fp) == 0;
    if (!seen) rc = add_file(ck, fp, err, errlen);
  }
  gtl_json_free(j);
  return rc;
}

int moe_ckpt_open(const char *dir, MoeCheckpoint *ck, char *err, size_t errlen) {
  memset(ck, 0, sizeof *ck);
  snprintf(ck->dir, sizeof ck->dir, "%s", dir);
  char p[1400], e2[600];
  snprintf(p, sizeof p, "%s/config.json", dir);
  MoeConfig cfg;
  if (moe_config_read(p, &cfg, e2, sizeof e2)) FAIL("%s: %s", dir, e2);
  if (moe_layout_build(&cfg, &ck->lay)) FAIL("out of host memory for the layout");
  ck->src = (MoeSource *)calloc((size_t)ck->lay.n, sizeof(MoeSource));
  if (!ck->src || open_files(ck, err, errlen)) {
    if (!ck->src) snprintf(err, errlen, "out of host memory");
    moe_ckpt_close(ck);
    return -1;
  }
  int f0;
  char fused_name[112];
  snprintf(fused_name, sizeof fused_name, "model.layers.0.mlp.experts.gate_up_proj");
  ck->fused = find(ck, fused_name, &f0) != NULL || cfg.arch == MOE_ARCH_GPTOSS;
  MoePlan plan;
  const GtlStTensor **found = NULL;
  int *found_file = NULL;
  if (moe_plan_build(&ck->lay, ck->fused, &plan) ||
      !(found = (const GtlStTensor **)calloc((size_t)plan.n + 1, sizeof *found)) ||
      !(found_file = (int *)calloc((size_t)plan.n + 1, sizeof(int)))) {
    free(found);
    moe_plan_free(&plan);
    moe_ckpt_close(ck);
    FAIL("out of host memory for the plan");
  }
  /* Every problem, the first 8 spelled out. */
  int n_bad = 0, used = 0;
  size_t o = (size_t)snprintf(err, errlen, "%s: ", dir);
  for (int i = 0; i < plan.n; i++) {
    const MoeFileTensor *f = &plan.ft[i];
    int file = -1;
    const GtlStTensor *t = find(ck, f->name, &file);
    char alt[112];
    const char *b = strstr(f->name, ".block_sparse_moe.");
    if (!t && b) { /* the same tensor under transformers v5's module name, mlp */
      snprintf(alt, sizeof alt, "%.*s.mlp.%s", (int)(b - f->name), f->name, b + 18);
      t = find(ck, alt, &file);
    }
    char want[96], got[96], line[400];
    shape_str(want, sizeof want, f->ndim, f->shape);
    line[0] = '\0';
    if (!t) {
      snprintf(line, sizeof line, "missing tensor %s (expected shape %s)", f->name, want);
    } else if (f->role != MOE_FT_FLOAT && t->dtype != GTL_ST_U8) {
      snprintf(line, sizeof line, "tensor %s: dtype %s, expected U8 (MXFP4 %s)", f->name, gtl_st_dtype_name(t->dtype),
               f->role == MOE_FT_MXFP4_BLOCKS ? "blocks" : "scales");
    } else if (f->role == MOE_FT_FLOAT && t->dtype != GTL_ST_BF16 && t->dtype != GTL_ST_F16 && t->dtype != GTL_ST_F32) {
      snprintf(line, sizeof line, "tensor %s: dtype %s is not supported (BF16, F16, F32)", f->name,
               gtl_st_dtype_name(t->dtype));
    } else {
      int same = t->ndim == f->ndim;
      for (int d = 0; same && d < f->ndim; d++) same = t->shape[d] == f->shape[d];
      if (!same) {
        shape_str(got, sizeof got, t->ndim, t->shape);
        snprintf(line, sizeof line, "tensor %s: expected shape %s, found %s in %s", f->name, want, got,
                 ck->path[file]);
      }
    }
    if (line[0]) {
      if (n_bad < 8 && o < errlen) o += (size_t)snprintf(err + o, errlen - o, "%s%s", n_bad ? "; " : "", line);
      n_bad++;
      continue;
    }
    found[i] = t;
    found_file[i] = file;
    used++;
  }
  for (int i = 0; i < plan.n && !n_bad; i++) {
    const MoeFileTensor *f = &plan.ft[i];
    for (int k = 0; k < f->n_parts; k++) {
      const MoePart *pt = &plan.parts[f->first_part + k];
      MoeSource *s = &ck->src[pt->tensor];
      s->file = found_file[i];
      s->st = found[i];
      s->elem_off = pt->elem_off;
      s->conv = pt->conv;
      s->row_stride = pt->row_stride;
      s->col_stride = pt->col_stride;
      if (pt->conv == MOE_CONV_MXFP4) {
        s->sc = found[f->scales];
        s->sc_file = found_file[f->scales];
        ck->n_mxfp4++;
        continue;
      }
      ck->n_strided += pt->conv == MOE_CONV_STRIDED;
      ck->n_bf16 += found[i]->dtype == GTL_ST_BF16;
      ck->n_f16 += found[i]->dtype == GTL_ST_F16;
      ck->n_f32 += found[i]->dtype == GTL_ST_F32;
    }
  }
  free(found);
  free(found_file);
  moe_plan_free(&plan);
  if (n_bad) {
    if (n_bad > 8 && o < errlen) snprintf(err + o, errlen - o, "; and %d more", n_bad - 8);
    moe_ckpt_close(ck);
    return -1;
  }
  size_t total = 0;
  for (int f = 0; f < ck->n_files; f++) total += ck->st[f].n_tensors;
  ck->n_unused = (int)total - used;
  return 0;
}

uint64_t moe_ckpt_file_offset(const MoeCheckpoint *ck, int t) {
  const MoeSource *s = &ck->src[t];
  return ck->st[s->file].data_offset + s->st->begin + s->elem_off * gtl_st_dtype_size(s->st->dtype);
}

static int read_all(int fd, void *buf, size_t n, uint64_t off) {
  for (size_t got = 0; got < n;) {
    ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static uint16_t elem_bf16(const unsigned char *p, GtlStDtype dt) {
  if (dt == GTL_ST_BF16) return (uint16_t)(p[0] | (p[1] << 8));
  float v;
  if (dt == GTL_ST_F32) memcpy(&v, p, 4);
  else v = gtl_fp16_to_f32((uint16_t)(p[0] | (p[1] << 8)));
  return gtl_f32_to_bf16(v);
}

/* MXFP4: the rows the tensor spans (one read of blocks, one of scales), each of its rows
 * decoded from its G·16 block bytes and G scales. */
static int read_mxfp4(const MoeCheckpoint *ck, int t, uint16_t *out, char *err, size_t errlen) {
  const MoeSource *s = &ck->src[t];
  const MoeTensor *x = &ck->lay.t[t];
  const uint64_t G = (uint64_t)x->cols / MOE_MXFP4_BLOCK, span = (uint64_t)((x->rows - 1) * s->row_stride + 1);
  const uint64_t b0 = ck->st[s->file].data_offset + s->st->begin, s0 = ck->st[s->sc_file].data_offset + s->sc->begin;
  unsigned char *buf = (unsigned char *)malloc((size_t)(span * G * 17));
  if (!buf) FAIL("out of host memory reading %s", x->name);
  unsigned char *sc = buf + span * G * 16;
  if (read_all(ck->fd[s->file], buf, (size_t)(span * G * 16), b0 + s->elem_off * G * 16) ||
      read_all(ck->fd[s->sc_file], sc, (size_t)(span * G), s0 + s->elem_off * G)) {
    free(buf);
    FAIL("%s: read of %s failed", ck->path[s->file], x->name);
  }
  for (int64_t r = 0; r < x->rows; r++) {
    const uint64_t row = (uint64_t)(r * s->row_stride);
    moe_mxfp4_decode_row(buf + row * G * 16, sc + row * G, x->cols, out + (uint64_t)r * x->cols);
  }
  free(buf);
  return 0;
}

/* A strided slice: read the span it covers, gather (gpt-oss's dense experts: one slab of
 * one expert, D·2F elements). */
static int read_strided(const MoeCheckpoint *ck, int t, uint16_t *out, char *err, size_t errlen) {
  const MoeSource *s = &ck->src[t];
  const MoeTensor *x = &ck->lay.t[t];
  const size_t es = gtl_st_dtype_size(s->st->dtype);
  const int64_t cols = x->cols ? x->cols : 1;
  const uint64_t span = (uint64_t)((x->rows - 1) * s->row_stride + (cols - 1) * s->col_stride + 1);
  unsigned char *buf = (unsigned char *)malloc((size_t)(span * es));
  if (!buf) FAIL("out of host memory reading %s", x->name);
  if (read_all(ck->fd[s->file], buf, (size_t)(span * es), moe_ckpt_file_offset(ck, t))) {
    free(buf);
    FAIL("%s: read of %s failed", ck->path[s->file], x->name);
  }
  for (int64_t r = 0; r < x->rows; r++)
    for (int64_t c = 0; c < cols; c++)
      out[r * cols + c] = elem_bf16(buf + (size_t)(r * s->row_stride + c * s->col_stride) * es, s->st->dtype);
  free(buf);
  return 0;
}

int moe_ckpt_read_bf16(const MoeCheckpoint *ck, int t, uint16_t *out, char *err, size_t errlen) {
  const MoeSource *s = &ck->src[t];
  if (s->conv == MOE_CONV_MXFP4) return read_mxfp4(ck, t, out, err, errlen);
  if (s->conv == MOE_CONV_STRIDED) return read_strided(ck, t, out, err, errlen);
  const uint64_t n = moe_tensor_numel(&ck->lay.t[t]), off = moe_ckpt_file_offset(ck, t);
  const size_t es = gtl_st_dtype_size(s->st->dtype);
  if (s->st->dtype == GTL_ST_BF16) {
    if (read_all(ck->fd[s->file], out, n * 2, off)) FAIL("%s: read of %s failed", ck->path[s->file], ck->lay.t[t].name);
    return 0;
  }
  enum { CHUNK = 1 << 16 };
  unsigned char buf[CHUNK * 4];
  for (uint64_t i = 0; i < n; i += CHUNK) {
    const size_t m = (size_t)(n - i < CHUNK ? n - i : CHUNK);
    if (read_all(ck->fd[s->file], buf, m * es, off + i * es))
      FAIL("%s: read of %s failed", ck->path[s->file], ck->lay.t[t].name);
    for (size_t k = 0; k < m; k++) {
      float v;
      if (es == 4) memcpy(&v, buf + 4 * k, 4);
      else v = gtl_fp16_to_f32((uint16_t)(buf[2 * k] | (buf[2 * k + 1] << 8)));
      out[i + k] = gtl_f32_to_bf16(v);
    }
  }
  return 0;
}

void moe_ckpt_close(MoeCheckpoint *ck) {
  for (int f = 0; f < ck->n_files; f++) {
    if (ck->fd && ck->fd[f] >= 0) close(ck->fd[f]);
    if (ck->st) gtl_st_free(&ck->st[f]);
    if (ck->path) free(ck->path[f]);
  }
  free(ck->path);
  free(ck->fd);
  free(ck->st);
  free(ck->src);
  moe_layout_free(&ck->lay);
  memset(ck, 0, sizeof *ck);
}
