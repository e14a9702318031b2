/* ckpt_plan.c — which file tensors a checkpoint holds and where each layout tensor sits
 * in them (see checkpoint.h: MoePlan; per-expert, fused v5, and gpt-oss dense / MXFP4). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "mxfp4.h"

/* ---- file plan ---------------------------------------------------------------------- */
static MoeFileTensor *ft_add(MoePlan *p, const char *name, int ndim, uint64_t d0, uint64_t d1, uint64_t d2,
                             uint64_t d3, MoeFtRole role) {
  MoeFileTensor *f = &p->ft[p->n++];
  snprintf(f->name, sizeof f->name, "%s", name);
  f->ndim = ndim;
  f->shape[0] = d0;
  f->shape[1] = d1;
  f->shape[2] = d2;
  f->shape[3] = d3;
  f->role = role;
  f->scales = -1;
  f->range_tensor = -1;
  f->first_part = p->n_parts;
  return f;
}

static void part_add(MoePlan *p, MoeFileTensor *f, int tensor, uint64_t off, MoeConv conv, int64_t rs, int64_t cs) {
  MoePart *q = &p->parts[p->n_parts++];
  q->tensor = tensor;
  q->elem_off = off;
  q->conv = conv;
  q->row_stride = rs;
  q->col_stride = cs;
  f->n_parts++;
}

/* A layout tensor stored whole: one file tensor of the same shape. */
static void plan_whole(MoePlan *p, const MoeLayout *lay, int t) {
  const MoeTensor *x = &lay->t[t];
  MoeFileTensor *f = ft_add(p, x->name, x->cols ? 2 : 1, (uint64_t)x->rows, (uint64_t)x->cols, 0, 0, MOE_FT_FLOAT);
  part_add(p, f, t, 0, MOE_CONV_CONTIG, x->cols, 1);
}

/* gpt-oss: dense [E][D][2F] / [E][F][D], or MXFP4 blocks + scales (checkpoint.h). */
static void plan_gptoss(const MoeLayout *lay, MoePlan *p) {
  const MoeConfig *c = &lay->cfg;
  const uint64_t E = (uint64_t)c->E, D = (uint64_t)c->D, F = (uint64_t)c->F;
  const int mx = c->expert_format == MOE_WF_MXFP4;
  char nm[112];
#define IDX(k, l, e) moe_tensor_index(lay, k, l, e)
  plan_whole(p, lay, IDX(MOE_EMBED, 0, 0));
  for (int l = 0; l < c->L; l++) {
    const MoeKind whole[] = {MOE_ATTN_NORM, MOE_Q, MOE_Q_BIAS, MOE_K, MOE_K_BIAS, MOE_V, MOE_V_BIAS, MOE_O,
                             MOE_O_BIAS, MOE_SINKS, MOE_FFN_NORM, MOE_ROUTER, MOE_ROUTER_BIAS};
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
      if (IDX(whole[i], l, 0) >= 0) plan_whole(p, lay, IDX(whole[i], l, 0));
    for (int down = 0; down < 2; down++) {
      const uint64_t out = down ? D : 2 * F, in = down ? F : D, G = in / MOE_MXFP4_BLOCK;
      const char *base = down ? "down_proj" : "gate_up_proj";
      MoeFileTensor *f;
      if (mx) {
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%s_blocks", l, base);
        f = ft_add(p, nm, 4, E, out, G, 16, MOE_FT_MXFP4_BLOCKS);
        f->scales = p->n;
        f->range_tensor = IDX(down ? MOE_DOWN : MOE_GATE, l, 0);
        for (uint64_t e = 0; e < E; e++) {
          if (down) part_add(p, f, IDX(MOE_DOWN, l, (int)e), e * D, MOE_CONV_MXFP4, 1, 0);
          else {
            part_add(p, f, IDX(MOE_GATE, l, (int)e), e * 2 * F, MOE_CONV_MXFP4, 2, 0);
            part_add(p, f, IDX(MOE_UP, l, (int)e), e * 2 * F + 1, MOE_CONV_MXFP4, 2, 0);
          }
        }
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%s_scales", l, base);
        f = ft_add(p, nm, 3, E, out, G, 0, MOE_FT_MXFP4_SCALES);
        f->range_tensor = IDX(down ? MOE_DOWN : MOE_GATE, l, 0);
      } else { /* element (r, c) of W_gate[e] is gate_up[e][c][2r]; of W_down[e], down[e][c][r] */
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%s", l, base);
        f = ft_add(p, nm, 3, E, in, out, 0, MOE_FT_FLOAT);
        f->slab = in * out;
        for (uint64_t e = 0; e < E; e++) {
          if (down) part_add(p, f, IDX(MOE_DOWN, l, (int)e), e * F * D, MOE_CONV_STRIDED, 1, (int64_t)D);
          else {
            part_add(p, f, IDX(MOE_GATE, l, (int)e), e * D * 2 * F, MOE_CONV_STRIDED, 2, (int64_t)(2 * F));
            part_add(p, f, IDX(MOE_UP, l, (int)e), e * D * 2 * F + 1, MOE_CONV_STRIDED, 2, (int64_t)(2 * F));
          }
        }
      }
      if (!c->expert_bias) continue;
      snprintf(nm, sizeof nm, "model.layers.%d.mlp.experts.%s_bias", l, base);
      f = ft_add(p, nm, 2, E, out, 0, 0, MOE_FT_FLOAT);
      f->slab = out;
      for (uint64_t e = 0; e < E; e++) {
        if (down) part_add(p, f, IDX(MOE_DOWN_BIAS, l, (int)e), e * D, MOE_CONV_STRIDED, 1, 0);
        else {
          part_add(p, f, IDX(MOE_GATE_BIAS, l, (int)e), e * 2 * F, MOE_CONV_STRIDED, 2, 0);
          part_add(p, f, IDX(MOE_UP_BIAS, l, (int)e), e * 2 * F + 1, MOE_CONV_STRIDED, 2, 0);
        }
      }
    }
  }
  plan_whole(p, lay, IDX(MOE_FINAL_NORM, 0, 0));
  if (!c->tie_embeddings) plan_whole(p, lay, IDX(MOE_LM_HEAD, 0, 0));
#undef IDX
}

int moe_plan_build(const MoeLayout *lay, int fused, MoePlan *p) {
  memset(p, 0, sizeof *p);
  p->fused = fused;
  p->ft = (MoeFileTensor *)calloc((size_t)lay->n, sizeof(MoeFileTensor));
  p->parts = (MoePart *)calloc((size_t)lay->n, sizeof(MoePart));
  if (!p->ft || !p->parts) {
    moe_plan_free(p);
    return -1;
  }
  const MoeConfig *c = &lay->cfg;
  if (c->arch == MOE_ARCH_GPTOSS) {
    plan_gptoss(lay, p);
    return 0;
  }
  for (int i = 0; i < lay->n; i++) {
    const MoeTensor *t = &lay->t[i];
    const int expert_kind = t->kind == MOE_GATE || t->kind == MOE_UP || t->kind == MOE_DOWN;
    MoeFileTensor *f = &p->ft[p->n];
    if (!fused || !expert_kind) {
      snprintf(f->name, sizeof f->name, "%s", t->name);
      if (fused && t->kind == MOE_ROUTER) /* v5 keeps Mixtral's router under mlp. too */
        snprintf(f->name, sizeof f->name, "model.layers.%d.mlp.gate.weight", t->layer);
      f->ndim = t->cols ? 2 : 1;
      f->shape[0] = (uint64_t)t->rows;
      f->shape[1] = (uint64_t)t->cols;
      f->first_part = p->n_parts;
      f->n_parts = 1;
      p->parts[p->n_parts].tensor = i;
      p->parts[p->n_parts++].elem_off = 0;
      f->scales = f->range_tensor = -1;
      p->n++;
      continue;
    }
    if (t->expert != 0 || t->kind == MOE_UP) continue; /* emitted with expert 0's gate/down */
    const int l = t->layer, down = t->kind == MOE_DOWN;
    const uint64_t FD = (uint64_t)c->F * c->D;
    snprintf(f->name, sizeof f->name, "model.layers.%d.mlp.experts.%s", l,
             down ? "down_proj" : "gate_up_proj");
    f->ndim = 3;
    f->shape[0] = (uint64_t)c->E;
    f->shape[1] = down ? (uint64_t)c->D : 2ull * c->F;
    f->shape[2] = down ? (uint64_t)c->F : (uint64_t)c->D;
    f->first_part = p->n_parts;
    f->scales = f->range_tensor = -1;
    for (int e = 0; e < c->E; e++) {
      if (down) {
        p->parts[p->n_parts].tensor = moe_tensor_index(lay, MOE_DOWN, l, e);
        p->parts[p->n_parts++].elem_off = (uint64_t)e * FD;
      } else { /* gate rows first, then up rows: MixtralExperts chunks gate_up in that order */
        p->parts[p->n_parts].tensor = moe_tensor_index(lay, MOE_GATE, l, e);
        p->parts[p->n_parts++].elem_off = 2ull * e * FD;
        p->parts[p->n_parts].tensor = moe_tensor_index(lay, MOE_UP, l, e);
        p->parts[p->n_parts++].elem_off = (2ull * e + 1) * FD;
      }
    }
    f->n_parts = p->n_parts - f->first_part;
    p->n++;
  }
  return 0;
}

void moe_plan_free(MoePlan *p) {
  free(p->ft);
  free(p->parts);
  memset(p, 0, sizeof *p);
}
