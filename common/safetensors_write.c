/* safetensors_write.c — safetensors writer (see safetensors.h): gtl_st_header_build (the
 * JSON header of a tensor list, checked: names, dtypes, shapes, offsets, metadata) and
 * gtl_st_write (header and data to a new file). The reader is safetensors.c. */
#include "safetensors.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors_internal.h" /* k_dtypes, errf and the checks both halves use */

typedef struct {
  unsigned char *p;
  size_t len, cap;
  int oom;
} Buf;

static void buf_put(Buf *b, const void *s, size_t n) {
  if (b->oom) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    unsigned char *q = (unsigned char *)realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* s as a JSON string literal: quote and backslash escaped, control bytes as \u00XX. */
static void buf_json_str(Buf *b, const char *s) {
  buf_put(b, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    char e[8];
    if (*c == '"' || *c == '\\') {
      e[0] = '\\';
      e[1] = (char)*c;
      buf_put(b, e, 2);
    } else if (*c < 0x20) {
      snprintf(e, sizeof e, "\\u%04x", *c);
      buf_put(b, e, 6);
    } else {
      buf_put(b, c, 1);
    }
  }
  buf_put(b, "\"", 1);
}

static int valid_utf8(const char *s) {
  size_t n = strlen(s);
  return utf8_bad_at((const unsigned char *)s, n) == n;
}

unsigned char *gtl_st_header_build(GtlStTensor *t, size_t n, const char *const *meta,
                                   size_t n_meta, size_t *out_len, char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  *out_len = 0;
  uint64_t off = 0;
  for (size_t i = 0; i < n; i++) {
    if (!t[i].name || !t[i].name[0] || !valid_utf8(t[i].name)) {
      errf(err, errlen, "tensor %zu: name: empty or not valid UTF-8", i);
      return NULL;
    }
    if (strcmp(t[i].name, "__metadata__") == 0) {
      errf(err, errlen, "tensor %zu: name: \"__metadata__\" is reserved", i);
      return NULL;
    }
    if ((unsigned)t[i].dtype >= GTL_ST_DTYPE_COUNT) {
      errf(err, errlen, "tensor \"%s\": dtype: invalid (%d)", t[i].name, (int)t[i].dtype);
      return NULL;
    }
    if (t[i].ndim < 0 || t[i].ndim > GTL_ST_MAX_DIMS) {
      errf(err, errlen, "tensor \"%s\": shape: ndim %d outside [0, %d]", t[i].name, t[i].ndim,
           GTL_ST_MAX_DIMS);
      return NULL;
    }
    uint64_t bytes;
    if (tensor_bytes(t[i].shape, t[i].ndim, t[i].dtype, &bytes) != 0 || off + bytes < off) {
      errf(err, errlen, "tensor \"%s\": shape: byte count overflows 64 bits", t[i].name);
      return NULL;
    }
    t[i].begin = off;
    t[i].end = off + bytes;
    off += bytes;
  }
  for (size_t i = 0; i < 2 * n_meta; i++)
    if (!meta[i] || !valid_utf8(meta[i])) {
      errf(err, errlen, "__metadata__: entry %zu is NULL or not valid UTF-8", i / 2);
      return NULL;
    }
  if (n > 1) {
    const GtlStTensor **s = (const GtlStTensor **)malloc(n * sizeof *s);
    if (!s) {
      errf(err, errlen, "out of host memory");
      return NULL;
    }
    for (size_t i = 0; i < n; i++) s[i] = &t[i];
    qsort(s, n, sizeof *s, cmp_tensor_ptr_name);
    for (size_t i = 1; i < n; i++)
      if (strcmp(s[i]->name, s[i - 1]->name) == 0) {
        errf(err, errlen, "tensor \"%s\": duplicate tensor name", s[i]->name);
        free(s);
        return NULL;
      }
    free(s);
  }

  Buf b = {NULL, 0, 0, 0};
  buf_put(&b, "\0\0\0\0\0\0\0\0", 8); /* the length, patched below */
  buf_str(&b, "{");
  if (n_meta) {
    buf_str(&b, "\"__metadata__\":{");
    for (size_t i = 0; i < n_meta; i++) {
      if (i) buf_str(&b, ",");
      buf_json_str(&b, meta[2 * i]);
      buf_str(&b, ":");
      buf_json_str(&b, meta[2 * i + 1]);
    }
    buf_str(&b, "}");
  }
  for (size_t i = 0; i < n; i++) {
    char num[64];
    if (i || n_meta) buf_str(&b, ",");
    buf_json_str(&b, t[i].name);
    buf_str(&b, ":{\"dtype\":\"");
    buf_str(&b, k_dtypes[t[i].dtype].name);
    buf_str(&b, "\",\"shape\":[");
    for (int d = 0; d < t[i].ndim; d++) {
      snprintf(num, sizeof num, "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
      buf_str(&b, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t[i].begin,
             (unsigned long long)t[i].end);
    buf_str(&b, num);
  }
  buf_str(&b, "}");
  while (b.len % 8) buf_put(&b, " ", 1); /* the byte buffer starts 8-byte aligned */
  if (b.oom) {
    free(b.p);
    errf(err, errlen, "out of host memory building the header");
    return NULL;
  }
  uint64_t N = b.len - 8;
  for (int i = 0; i < 8; i++) b.p[i] = (unsigned char)(N >> (8 * i));
  *out_len = b.len;
  return b.p;
}

int gtl_st_write(const char *path, GtlStTensor *t, const void *const *data, size_t n,
                 const char *const *meta, size_t n_meta, char *err, size_t errlen) {
  size_t hlen;
  unsigned char *h = gtl_st_header_build(t, n, meta, n_meta, &hlen, err, errlen);
  if (!h) return -1;
  FILE *f = fopen(path, "wb");
  if (!f) {
    free(h);
    return errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
  }
  int ok = fwrite(h, 1, hlen, f) == hlen;
  free(h);
  for (size_t i = 0; ok && i < n; i++) {
    size_t bytes = (size_t)(t[i].end - t[i].begin);
    ok = bytes == 0 || fwrite(data[i], 1, bytes, f) == bytes;
  }
  int e = errno;
  if (fclose(f) != 0 && ok) {
    ok = 0;
    e = errno;
  }
  if (!ok) return errf(err, errlen, "%s: write failed: %s", path, strerror(e));
  return 0;
}
