/* ckpt_writer.c — the synthetic checkpoint writer (see checkpoint.h): config.json, the
 * shards of the file plan with seeded values (gpt-oss MXFP4: seeded blocks and scales),
 * and model.safetensors.index.json. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>

#include "checkpoint.h"
#include "convert.h"
#include "mxfp4.h"


#define FAIL(...)                                            \
  do {                                                       \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__);   \
    return -1;                                               \
  } while (0)


/* ---- writer ------------------------------------------------------------------------- */
static uint64_t ft_numel(const MoeFileTensor *f) {
  uint64_t n = 1;
  for (int d = 0; d < f->ndim; d++) n *= f->shape[d];
  return n;
}

/* Write n bf16 values as dt (conv: scratch of 4 MiB). */
static int write_vals(FILE *out, const uint16_t *vals, uint64_t n, GtlStDtype dt, unsigned char *conv) {
  enum { CHUNK = 1 << 20 };
  if (dt == GTL_ST_BF16) return fwrite(vals, 2, (size_t)n, out) == (size_t)n ? 0 : -1;
  for (uint64_t i = 0; i < n; i += CHUNK) {
    const size_t m = (size_t)(n - i < CHUNK ? n - i : CHUNK);
    for (size_t j = 0; j < m; j++) {
      const float v = gtl_bf16_to_f32(vals[i + j]);
      if (dt == GTL_ST_F32) memcpy(conv + 4 * j, &v, 4);
      else {
        const uint16_t h = gtl_f32_to_fp16(v);
        conv[2 * j] = (unsigned char)(h & 0xFF);
        conv[2 * j + 1] = (unsigned char)(h >> 8);
      }
    }
    if (fwrite(conv, gtl_st_dtype_size(dt), m, out) != m) return -1;
  }
  return 0;
}

/* MXFP4 blocks or scales: mxfp4.h's seeded bytes, seeded by the range tensor. */
static int write_mxfp4(FILE *out, const MoeLayout *lay, const MoeFileTensor *f, uint64_t seed, unsigned char *conv) {
  enum { CHUNK = 1 << 20 };
  float lo, hi;
  moe_synth_range(lay, f->range_tensor, &lo, &hi);
  const uint64_t n = ft_numel(f), sd = moe_synth_seed(seed ^ (f->role == MOE_FT_MXFP4_BLOCKS ? 0xB10Cull : 0x5CA1Eull),
                                                      f->range_tensor);
  for (uint64_t i = 0; i < n; i += CHUNK) {
    const size_t m = (size_t)(n - i < CHUNK ? n - i : CHUNK);
    for (size_t j = 0; j < m; j++)
      conv[j] = f->role == MOE_FT_MXFP4_BLOCKS ? moe_mxfp4_synth_block(sd, i + j)
                                                : moe_mxfp4_synth_scale(sd, i + j, hi / sqrt(3.0));
    if (fwrite(conv, 1, m, out) != m) return -1;
  }
  return 0;
}

/* Write file tensor f's synthetic values as dtype, part by part (parts are in offset
 * order); strided parts (gpt-oss) scattered into one expert slab at a time. */
static int write_tensor(FILE *out, const MoeLayout *lay, const MoePlan *p, const MoeFileTensor *f,
                        uint64_t seed, GtlStDtype dt, uint16_t *vals, unsigned char *conv) {
  if (f->role != MOE_FT_FLOAT) return write_mxfp4(out, lay, f, seed, conv);
  if (!f->slab) {
    for (int k = 0; k < f->n_parts; k++) {
      const int t = p->parts[f->first_part + k].tensor;
      moe_synth_tensor(lay, t, seed, vals);
      if (write_vals(out, vals, moe_tensor_numel(&lay->t[t]), dt, conv)) return -1;
    }
    return 0;
  }
  uint16_t *slab = (uint16_t *)malloc((size_t)f->slab * 2);
  if (!slab) return -1;
  int rc = 0;
  for (int k = 0, s = 0; k < f->n_parts && !rc; s++) {
    for (; k < f->n_parts && p->parts[f->first_part + k].elem_off / f->slab == (uint64_t)s; k++) {
      const MoePart *q = &p->parts[f->first_part + k];
      const MoeTensor *x = &lay->t[q->tensor];
      const int64_t cols = x->cols ? x->cols : 1;
      const uint64_t o = q->elem_off - (uint64_t)s * f->slab;
      moe_synth_tensor(lay, q->tensor, seed, vals);
      for (int64_t r = 0; r < x->rows; r++)
        for (int64_t c = 0; c < cols; c++) slab[o + (uint64_t)(r * q->row_stride + c * q->col_stride)] = vals[r * cols + c];
    }
    rc = write_vals(out, slab, f->slab, dt, conv);
  }
  free(slab);
  return rc;
}

int moe_ckpt_dir_writable(const char *dir, int force, char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  struct stat sb;
  if (stat(dir, &sb) != 0) {
    if (errno == ENOENT) return 0;
    FAIL("%s: %s", dir, strerror(errno));
  }
  if (!S_ISDIR(sb.st_mode)) FAIL("%s exists and is not a folder", dir);
  DIR *d = opendir(dir);
  if (!d) FAIL("%s: %s", dir, strerror(errno));
  int n = 0;
  char first[256] = "";
  for (struct dirent *de; (de = readdir(d)) != NULL;) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (!n++) snprintf(first, sizeof first, "%s", de->d_name);
  }
  closedir(d);
  if (n && !force)
    FAIL("%s is not empty (%d entr%s, e.g. %s): refusing to write a checkpoint there (--force to write over it)",
         dir, n, n == 1 ? "y" : "ies", first);
  return 0;
}

int moe_ckpt_write_synthetic(const char *dir, const MoeConfig *c, uint64_t seed,
                             const MoeWriteOpts *o, char *err, size_t errlen) {
  const MoeWriteOpts dflt = {GTL_ST_BF16, 0, 0};
  if (!o) o = &dflt;
  if (err && errlen) err[0] = '\0';
  if (o->dtype != GTL_ST_BF16 && o->dtype != GTL_ST_F16 && o->dtype != GTL_ST_F32)
    FAIL("writer: dtype %s is not supported (BF16, F16, F32)", gtl_st_dtype_name(o->dtype));
  char e2[600], path[1400];
  if (moe_config_check(c, e2, sizeof e2)) FAIL("writer: %s", e2);
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) FAIL("%s: %s", dir, strerror(errno));
  snprintf(path, sizeof path, "%s/config.json", dir);
  if (moe_config_write(path, c, err, errlen)) return -1;
  MoeLayout lay;
  MoePlan plan;
  if (moe_layout_build(c, &lay)) FAIL("out of host memory");
  if (moe_plan_build(&lay, o->fused, &plan)) {
    moe_layout_free(&lay);
    FAIL("out of host memory");
  }
  const size_t es = gtl_st_dtype_size(o->dtype);
  /* Shards: consecutive file tensors, a new shard once shard_bytes would be passed. */
  int *shard = (int *)calloc((size_t)plan.n, sizeof(int));
  int n_shards = 1;
  uint64_t cur = 0, total = 0;
  for (int i = 0; i < plan.n; i++) {
    const uint64_t b = ft_numel(&plan.ft[i]) * (plan.ft[i].role == MOE_FT_FLOAT ? es : 1);
    if (o->shard_bytes && cur > 0 && cur + b > o->shard_bytes) {
      n_shards++;
      cur = 0;
    }
    shard[i] = n_shards - 1;
    cur += b;
    total += b;
  }
  uint16_t *vals = (uint16_t *)malloc((size_t)lay.max_numel * 2);
  unsigned char *conv = (unsigned char *)malloc((size_t)(1 << 20) * 4);
  GtlStTensor *st = (GtlStTensor *)calloc((size_t)plan.n, sizeof(GtlStTensor));
  int rc = (!shard || !vals || !conv || !st) ? (snprintf(err, errlen, "out of host memory"), -1) : 0;
  const char *meta[2] = {"format", "pt"}; /* transformers refuses files without it */
  char fname[64];
  for (int s = 0, i0 = 0; s < n_shards && !rc; s++) {
    int i1 = i0;
    while (i1 < plan.n && shard[i1] == s) i1++;
    for (int i = i0; i < i1; i++) {
      GtlStTensor *t = &st[i];
      t->name = plan.ft[i].name;
      t->dtype = plan.ft[i].role == MOE_FT_FLOAT ? o->dtype : GTL_ST_U8;
      t->ndim = plan.ft[i].ndim;
      for (int d = 0; d < t->ndim; d++) t->shape[d] = plan.ft[i].shape[d];
    }
    if (n_shards == 1) snprintf(fname, sizeof fname, "model.safetensors");
    else snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    size_t hlen = 0;
    unsigned char *h = gtl_st_header_build(st + i0, (size_t)(i1 - i0), meta, 1, &hlen, e2, sizeof e2);
    FILE *f = h ? fopen(path, "wb") : NULL;
    if (!h) rc = (snprintf(err, errlen, "%s: %s", path, e2), -1);
    else if (!f) rc = (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    else if (fwrite(h, 1, hlen, f) != hlen) rc = -1;
    for (int i = i0; i < i1 && !rc; i++)
      rc = write_tensor(f, &lay, &plan, &plan.ft[i], seed, o->dtype, vals, conv);
    if (f && fclose(f) != 0) rc = -1;
    if (rc && !err[0]) snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
    free(h);
    i0 = i1;
  }
  if (!rc && n_shards > 1) {
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) rc = (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    else {
      fprintf(f, "{\n  \"metadata\": {\"total_size\": %llu},\n  \"weight_map\": {\n", (unsigned long long)total);
      for (int i = 0; i < plan.n; i++)
        fprintf(f, "    \"%s\": \"model-%05d-of-%05d.safetensors\"%s\n", plan.ft[i].name, shard[i] + 1,
                n_shards, i + 1 < plan.n ? "," : "");
      fprintf(f, "  }\n}\n");
      if (fclose(f) != 0) rc = (snprintf(err, errlen, "%s: %s", path, strerror(errno)), -1);
    }
  }
  free(shard);
  free(vals);
  free(conv);
  free(st);
  moe_plan_free(&plan);
  moe_layout_free(&lay);
  return rc;
}
