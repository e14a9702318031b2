/* tune_cache.h — ch20's autotuning cache: the hardware-and-shape key a winning kernel
 * configuration is stored under, and the JSON file that keeps the winners between runs.
 * Pure C (C11 and C++17 alike, header-only), so tests/test_ch20_cache.c checks it without
 * a GPU. Reading goes through common/json.h; writing is atomic (a temporary file in the
 * same folder, fsync, rename), and a file that is not a ch20 cache is never overwritten.
 *
 * Key:    "<kernel>|<GPU name>|sms=<N>|cuda=<runtime version>|<shape bucket>"
 *         e.g. "attn|NVIDIA H200|sms=132|cuda=13000|B16_S8192_Hkv8_w0". A different GPU
 *         model, a partitioned GPU (fewer SMs), another CUDA runtime or another shape
 *         bucket is another key: the best configuration depends on all four.
 * Bucket: powers of two above the batch-like dimensions (attention: B and S; grouped
 *         GEMM: T), exact model dimensions (H_kv, window; E, top_k, D, F).
 * File:   {"schema":"gauntlet.ch20.tune_cache.v1","entries":[
 *           {"key":…,"kernel":"attn","gpu":…,"sms":132,"cuda":13000,"bucket":…,
 *            "config":{"splits":32,"stages":3},"us":41.2}, …]}
 *         gpu/sms/cuda/bucket repeat the key for people reading the file; the key decides. */
#pragma once
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

#define TUNE_CACHE_SCHEMA "gauntlet.ch20.tune_cache.v1"
#define TUNE_MAX_ENTRIES 512
#define TUNE_MAX_CFG 9
#define TUNE_CFG_MAX_VALUE (1 << 20) /* config fields are integers in [1, 2^20] (pdl, fused: [0, 1]) */

typedef struct {
  char key[256];
  char kernel[8];         /* "attn" or "gemm" */
  int cfg[TUNE_MAX_CFG];  /* in the order of tune_cfg_names(kernel) */
  int n_cfg;
  double us;              /* the winner's median during the search, microseconds */
} TuneEntry;

typedef struct {
  TuneEntry e[TUNE_MAX_ENTRIES];
  int n;
  int foreign;  /* the file exists but is not a ch20 cache (bad JSON, other schema): keep out */
  int skipped;  /* malformed entries left out (each reported) */
} TuneCache;

/* snprintf through a va_list: the length check is the caller's (no truncation warnings). */
static inline int tune_fmt(char *out, size_t n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const int w = vsnprintf(out, n, fmt, ap);
  va_end(ap);
  return w;
}

/** Names of a kernel's configuration fields, in TuneEntry.cfg order; *n gets their count.
 *  attn: splits (per (sequence, KV head)), stages (cp.async pipeline depth: the kernel
 *  variant); gemm: bm (m-tile rows), grid_up, grid_down (persistent blocks of the two
 *  launches), then each launch's kernel variant: bn_up, stages_up, bn_down, stages_down
 *  (column tile, which also sets the warps per CTA, and pipeline depth), pdl (down as a
 *  programmatic dependent of gate+up); both: fused (0/1: the mechanism of ch20/fused.cuh —
 *  attn: the split combine inside the split kernel; gemm: no sort kernel, each launch sorts
 *  the routing in-block). NULL for an unknown kernel. */
static inline const char *const *tune_cfg_names(const char *kernel, int *n) {
  static const char *const attn[] = {"splits", "stages", "fused"};
  static const char *const gemm[] = {"bm",      "grid_up",   "grid_down",   "bn_up", "stages_up",
                                     "bn_down", "stages_down", "pdl",       "fused"};
  if (!strcmp(kernel, "attn")) return *n = 3, attn;
  if (!strcmp(kernel, "gemm")) return *n = 9, gemm;
  return *n = 0, (const char *const *)NULL;
}

/** Value of field k of a kernel's configuration when an entry leaves it out, given the
 *  fields before it (cfg[0..k)); -1 when the field is required. The variant fields came
 *  later than the others: an entry without them was measured with the chapters' own
 *  kernels, whose values these are (ch18: 3 stages; ch15: 64 columns, 6 stages at bm 16
 *  and 4 above, no programmatic dependent launch), and so is an entry without fused (0:
 *  the chapters' separate combine and sort kernels). */
static inline int tune_cfg_default(const char *kernel, int k, const int *cfg) {
  if (!strcmp(kernel, "attn")) return k == 1 ? 3 : k == 2 ? 0 : -1;
  if (!strcmp(kernel, "gemm") && k >= 7) return 0;
  if (!strcmp(kernel, "gemm") && k >= 3) return (k == 3 || k == 5) ? 64 : cfg[0] == 16 ? 6 : 4;
  return -1;
}

/** Smallest valid value of field k: 0 for the on/off fields (gemm pdl; fused), else 1. */
static inline int tune_cfg_min(const char *kernel, int k) {
  return (!strcmp(kernel, "gemm") && k >= 7) || (!strcmp(kernel, "attn") && k == 2) ? 0 : 1;
}

/** Smallest power of two >= v (v >= 1; 1 for v <= 1). */
static inline int64_t tune_pow2_ceil(int64_t v) {
  int64_t p = 1;
  while (p < v && p < ((int64_t)1 << 40)) p <<= 1;
  return p;
}

/** Attention bucket: B and S rounded up to powers of two, H_kv and window exact. */
static inline void tune_bucket_attn(char *out, size_t n, int64_t B, int64_t S, int H_kv, int window) {
  tune_fmt(out, n, "B%lld_S%lld_Hkv%d_w%d", (long long)tune_pow2_ceil(B), (long long)tune_pow2_ceil(S),
           H_kv, window);
}
/** Grouped-GEMM bucket: T rounded up to a power of two, the expert shapes exact. */
static inline void tune_bucket_gemm(char *out, size_t n, int64_t T, int64_t E, int64_t top_k,
                                    int64_t D, int64_t F) {
  tune_fmt(out, n, "T%lld_E%lld_k%lld_D%lld_F%lld", (long long)tune_pow2_ceil(T), (long long)E,
           (long long)top_k, (long long)D, (long long)F);
}

/** The cache key (see the file header). Returns 0, or -1 when it does not fit in n bytes
 *  or a part holds '|' (which would make two different keys print the same). */
static inline int tune_key(char *out, size_t n, const char *kernel, const char *gpu, int sms,
                           int cuda_version, const char *bucket) {
  if (strchr(kernel, '|') || strchr(gpu, '|') || strchr(bucket, '|')) return -1;
  const int w = tune_fmt(out, n, "%s|%s|sms=%d|cuda=%d|%s", kernel, gpu, sms, cuda_version, bucket);
  return w < 0 || (size_t)w >= n ? -1 : 0;
}

/** The entry stored under key, or NULL. */
static inline const TuneEntry *tune_cache_find(const TuneCache *c, const char *key) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->e[i].key, key)) return &c->e[i];
  return NULL;
}

/** Store e (replacing an entry with the same key). Returns 0, or -1 when the cache is full. */
static inline int tune_cache_put(TuneCache *c, const TuneEntry *e) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->e[i].key, e->key)) return c->e[i] = *e, 0;
  if (c->n >= TUNE_MAX_ENTRIES) return -1;
  c->e[c->n++] = *e;
  return 0;
}

/* One entry from its JSON object; 0, or -1 with "entries[i].<field>: reason" in why. */
static inline int tune_entry_from_json(const GtlJson *o, size_t i, TuneEntry *e, char *why, size_t nw) {
  memset(e, 0, sizeof *e);
  const char *key = gtl_json_str(o, "key"), *kernel = gtl_json_str(o, "kernel");
  const GtlJson *cfg = gtl_json_get(o, "config"), *us = gtl_json_get(o, "us");
  const char *const *names;
  if (!o || o->type != GTL_JSON_OBJ)
    return tune_fmt(why, nw, "entries[%zu]: not an object", i), -1;
  if (!key || !*key || strlen(key) >= sizeof e->key)
    return tune_fmt(why, nw, "entries[%zu].key: missing, empty or longer than %zu bytes", i, sizeof e->key - 1), -1;
  if (!kernel || !(names = tune_cfg_names(kernel, &e->n_cfg)))
    return tune_fmt(why, nw, "entries[%zu].kernel: want \"attn\" or \"gemm\"", i), -1;
  if (strncmp(key, kernel, strlen(kernel)) || key[strlen(kernel)] != '|')
    return tune_fmt(why, nw, "entries[%zu].key: does not start with its kernel \"%s|\"", i, kernel), -1;
  if (!cfg || cfg->type != GTL_JSON_OBJ)
    return tune_fmt(why, nw, "entries[%zu].config: missing or not an object", i), -1;
  for (int k = 0; k < e->n_cfg; k++) {
    const GtlJson *v = gtl_json_get(cfg, names[k]);
    if (!v && (e->cfg[k] = tune_cfg_default(kernel, k, e->cfg)) >= 0) continue;
    const int lo = tune_cfg_min(kernel, k);
    if (!v || v->type != GTL_JSON_NUM || !(v->num >= lo && v->num <= TUNE_CFG_MAX_VALUE) ||
        v->num != (double)(int)v->num)
      return tune_fmt(why, nw, "entries[%zu].config.%s: want an integer in [%d, %d]", i, names[k], lo,
                      TUNE_CFG_MAX_VALUE), -1;
    e->cfg[k] = (int)v->num;
  }
  if (us && (us->type != GTL_JSON_NUM || !(us->num >= 0)))
    return tune_fmt(why, nw, "entries[%zu].us: want a number >= 0", i), -1;
  tune_fmt(e->key, sizeof e->key, "%s", key);
  tune_fmt(e->kernel, sizeof e->kernel, "%s", kernel);
  e->us = us ? us->num : -1;
  return 0;
}

/** Load the cache at path into c (c is reset first). A missing file is an empty cache
 *  (returns 0). A file that does not parse, or is not a ch20 cache, is reported on log
 *  with the parser's "offset N: reason" or the field at fault, ignored, and marked foreign
 *  so that tune_cache_save will not overwrite it (returns 1). Malformed entries of a real
 *  cache are reported by field ("entries[3].config.splits: …") and left out (c->skipped);
 *  the rest load (returns 0). */
static inline int tune_cache_load(TuneCache *c, const char *path, FILE *log) {
  memset(c, 0, sizeof *c);
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (errno == ENOENT) return 0;
    fprintf(log, "# tune cache %s: cannot open (%s): ignored, and not overwritten\n", path, strerror(errno));
    return c->foreign = 1, 1;
  }
  fclose(f);
  char err[256] = "", why[320] = "";
  GtlJson *root = gtl_json_parse_file(path, err, sizeof err);
  const GtlJson *entries = NULL;
  const char *schema = NULL;
  if (!root) tune_fmt(why, sizeof why, "not JSON (%s)", err);
  else if (root->type != GTL_JSON_OBJ) tune_fmt(why, sizeof why, "the root is not an object");
  else if (!(schema = gtl_json_str(root, "schema")) || strcmp(schema, TUNE_CACHE_SCHEMA))
    tune_fmt(why, sizeof why, "field \"schema\": want \"%s\"", TUNE_CACHE_SCHEMA);
  else if (!(entries = gtl_json_get(root, "entries")) || entries->type != GTL_JSON_ARR)
    tune_fmt(why, sizeof why, "field \"entries\": missing or not an array");
  if (why[0]) {
    fprintf(log, "# tune cache %s: %s: ignored, and not overwritten\n", path, why);
    gtl_json_free(root);
    return c->foreign = 1, 1;
  }
  for (size_t i = 0; i < entries->n; i++) {
    TuneEntry e;
    if (tune_entry_from_json(gtl_json_at(entries, i), i, &e, why, sizeof why) || tune_cache_put(c, &e)) {
      if (!why[0]) tune_fmt(why, sizeof why, "entries[%zu]: more than %d entries", i, TUNE_MAX_ENTRIES);
      fprintf(log, "# tune cache %s: %s: entry ignored\n", path, why);
      c->skipped++;
      why[0] = 0;
    }
  }
  gtl_json_free(root);
  return 0;
}

/** Write c to path atomically: path.tmp.XXXXXX in the same folder, fsync, rename over path
 *  (a reader sees the old file or the new one, never half of one). Refuses (-1) when the
 *  loaded file was foreign. Returns 0, or -1 with the reason in err. */
static inline int tune_cache_save(const TuneCache *c, const char *path, char *err, size_t nerr) {
  if (c->foreign)
    return tune_fmt(err, nerr, "%s is not a ch20 cache; it is left as it is (pass another --cache=PATH)", path), -1;
  char tmp[1100];
  if (tune_fmt(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp)
    return tune_fmt(err, nerr, "path too long"), -1;
  const int fd = mkstemp(tmp);
  if (fd < 0) return tune_fmt(err, nerr, "cannot create %s: %s", tmp, strerror(errno)), -1;
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    unlink(tmp);
    return tune_fmt(err, nerr, "fdopen: %s", strerror(errno)), -1;
  }
  fprintf(f, "{\"schema\":\"%s\",\"entries\":[", TUNE_CACHE_SCHEMA);
  for (int i = 0; i < c->n; i++) {
    const TuneEntry *e = &c->e[i];
    int n_names = 0;
    const char *const *names = tune_cfg_names(e->kernel, &n_names);
    /* the key's parts, for the reader of the file: kernel|gpu|sms=N|cuda=N|bucket */
    char gpu[256] = "", bucket[256] = "";
    int sms = 0, cuda = 0;
    const char *p1 = strchr(e->key, '|'), *p2 = p1 ? strchr(p1 + 1, '|') : NULL;
    const char *p4 = p2 ? strchr(p2 + 1, '|') : NULL, *p5 = p4 ? strchr(p4 + 1, '|') : NULL;
    if (p1 && p2 && p4 && p5) {
      tune_fmt(gpu, sizeof gpu, "%.*s", (int)(p2 - p1 - 1), p1 + 1);
      sscanf(p2 + 1, "sms=%d", &sms);
      sscanf(p4 + 1, "cuda=%d", &cuda);
      tune_fmt(bucket, sizeof bucket, "%s", p5 + 1);
    }
    fprintf(f, "%s\n {\"key\":", i ? "," : "");
    gtl_json_write_str(f, e->key);
    fprintf(f, ",\"kernel\":\"%s\",\"gpu\":", e->kernel);
    gtl_json_write_str(f, gpu);
    fprintf(f, ",\"sms\":%d,\"cuda\":%d,\"bucket\":", sms, cuda);
    gtl_json_write_str(f, bucket);
    fprintf(f, ",\"config\":{");
    for (int k = 0; k < n_names && k < e->n_cfg; k++) fprintf(f, "%s\"%s\":%d", k ? "," : "", names[k], e->cfg[k]);
    fprintf(f, "},\"us\":%.3f}", e->us >= 0 ? e->us : 0.0);
  }
  fprintf(f, "\n]}\n");
  const int bad = fflush(f) != 0 || ferror(f) || fsync(fd) != 0;
  const int saved_errno = errno;
  if (fclose(f) != 0 || bad) {
    unlink(tmp);
    return tune_fmt(err, nerr, "writing %s failed: %s", tmp, strerror(saved_errno)), -1;
  }
  if (rename(tmp, path) != 0) {
    const int e2 = errno;
    unlink(tmp);
    return tune_fmt(err, nerr, "rename %s -> %s: %s", tmp, path, strerror(e2)), -1;
  }
  return 0;
}
