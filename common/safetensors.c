/* safetensors.c — safetensors header reader (see safetensors.h; writer: safetensors_write.c). */
#include "safetensors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "safetensors_internal.h" /* k_dtypes, errf and the checks both halves use */

size_t gtl_st_dtype_size(GtlStDtype d) {
  return (unsigned)d < GTL_ST_DTYPE_COUNT ? k_dtypes[d].size : 0;
}

const char *gtl_st_dtype_name(GtlStDtype d) {
  return (unsigned)d < GTL_ST_DTYPE_COUNT ? k_dtypes[d].name : "?";
}

int gtl_st_dtype_from_name(const char *name, GtlStDtype *d) {
  for (int i = 0; i < GTL_ST_DTYPE_COUNT; i++)
    if (strcmp(name, k_dtypes[i].name) == 0) {
      *d = (GtlStDtype)i;
      return 0;
    }
  return -1;
}

uint64_t gtl_st_numel(const GtlStTensor *t) {
  uint64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* A JSON number that is an integer in [0, 2^53] (exact in a double): 0 and *v, or -1. */
static int json_uint(const GtlJson *j, uint64_t *v) {
  if (!j || j->type != GTL_JSON_NUM) return -1;
  double x = j->num;
  if (!(x >= 0 && x <= 9007199254740992.0)) return -1;
  uint64_t u = (uint64_t)x;
  if ((double)u != x) return -1;
  *v = u;
  return 0;
}

void gtl_st_free(GtlSafetensors *st) {
  if (!st) return;
  free(st->tensors);
  free(st->by_name);
  free(st->meta_key);
  free(st->meta_val);
  free(st->strings);
  memset(st, 0, sizeof *st);
}


static int cmp_tensor_offsets(const void *a, const void *b) {
  const GtlStTensor *x = (const GtlStTensor *)a, *y = (const GtlStTensor *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* The shape as "[a, b, c]" for messages. */
static void shape_str(const GtlStTensor *t, char *out, size_t n) {
  size_t k = (size_t)snprintf(out, n, "[");
  for (int i = 0; i < t->ndim && k < n; i++)
    k += (size_t)snprintf(out + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
  if (k < n) snprintf(out + k, n - k, "]");
}

/* Fill t from the JSON entry e of tensor `name`; check it against data_len. */
static int tensor_from_json(const char *name, const GtlJson *e, uint64_t data_len,
                            uint64_t data_offset, uint64_t file_size, GtlStTensor *t,
                            char *err, size_t errlen) {
  if (e->type != GTL_JSON_OBJ)
    return errf(err, errlen, "tensor \"%s\": entry is not an object", name);
  const GtlJson *dt = gtl_json_get(e, "dtype");
  if (!dt) return errf(err, errlen, "tensor \"%s\": dtype: missing", name);
  if (dt->type != GTL_JSON_STR)
    return errf(err, errlen, "tensor \"%s\": dtype: not a string", name);
  if (gtl_st_dtype_from_name(dt->str, &t->dtype) != 0)
    return errf(err, errlen, "tensor \"%s\": dtype: unknown dtype \"%s\"", name, dt->str);

  const GtlJson *sh = gtl_json_get(e, "shape");
  if (!sh) return errf(err, errlen, "tensor \"%s\": shape: missing", name);
  if (sh->type != GTL_JSON_ARR)
    return errf(err, errlen, "tensor \"%s\": shape: not an array", name);
  if (sh->n > GTL_ST_MAX_DIMS)
    return errf(err, errlen, "tensor \"%s\": shape: %zu dims, at most %d supported", name, sh->n,
                GTL_ST_MAX_DIMS);
  t->ndim = (int)sh->n;
  int i = 0;
  for (const GtlJson *c = sh->child; c; c = c->next, i++)
    if (json_uint(c, &t->shape[i]) != 0)
      return errf(err, errlen, "tensor \"%s\": shape: element %d is not a non-negative integer",
                  name, i);

  const GtlJson *off = gtl_json_get(e, "data_offsets");
  if (!off) return errf(err, errlen, "tensor \"%s\": data_offsets: missing", name);
  if (off->type != GTL_JSON_ARR || off->n != 2)
    return errf(err, errlen, "tensor \"%s\": data_offsets: not an array of two offsets", name);
  if (json_uint(off->child, &t->begin) != 0 || json_uint(off->child->next, &t->end) != 0)
    return errf(err, errlen, "tensor \"%s\": data_offsets: not non-negative integers", name);
  if (t->end < t->begin)
    return errf(err, errlen, "tensor \"%s\": data_offsets: end %llu is before begin %llu", name,
                (unsigned long long)t->end, (unsigned long long)t->begin);
  if (t->end > data_len)
    return errf(err, errlen,
                "tensor \"%s\": data_offsets: [%llu, %llu) out of range: the byte buffer holds "
                "%llu bytes (file offset %llu is past the file size %llu)",
                name, (unsigned long long)t->begin, (unsigned long long)t->end,
                (unsigned long long)data_len, (unsigned long long)(data_offset + t->end),
                (unsigned long long)file_size);

  uint64_t need;
  char sbuf[200];
  shape_str(t, sbuf, sizeof sbuf);
  if (tensor_bytes(t->shape, t->ndim, t->dtype, &need) != 0)
    return errf(err, errlen, "tensor \"%s\": shape: %s of %s overflows 64-bit byte count", name,
                sbuf, k_dtypes[t->dtype].name);
  if (t->end - t->begin != need)
    return errf(err, errlen,
                "tensor \"%s\": data_offsets: [%llu, %llu) holds %llu bytes but shape %s of %s "
                "needs %llu",
                name, (unsigned long long)t->begin, (unsigned long long)t->end,
                (unsigned long long)(t->end - t->begin), sbuf, k_dtypes[t->dtype].name,
                (unsigned long long)need);
  return 0;
}

int gtl_st_parse(const void *buf, size_t buf_len, uint64_t file_size, GtlSafetensors *st,
                 char *err, size_t errlen) {
  memset(st, 0, sizeof *st);
  if (err && errlen) err[0] = '\0';
  const unsigned char *b = (const unsigned char *)buf;
  if (file_size < 8)
    return errf(err, errlen, "truncated file: %llu bytes, the header length at offset 0 needs 8",
                (unsigned long long)file_size);
  if (buf_len > file_size)
    return errf(err, errlen, "buffer of %zu bytes is longer than the file size %llu", buf_len,
                (unsigned long long)file_size);
  if (buf_len < 8)
    return errf(err, errlen, "buffer holds %zu bytes, the header length at offset 0 needs 8",
                buf_len);
  uint64_t N = 0;
  for (int i = 7; i >= 0; i--) N = (N << 8) | b[i];
  if (N > file_size - 8)
    return errf(err, errlen,
                "header length %llu (file offset 0) runs past the end of the file: 8 + %llu > "
                "file size %llu",
                (unsigned long long)N, (unsigned long long)N, (unsigned long long)file_size);
  if (N > GTL_ST_MAX_HEADER)
    return errf(err, errlen, "header length %llu (file offset 0) is over the %llu-byte limit",
                (unsigned long long)N, GTL_ST_MAX_HEADER);
  if (buf_len - 8 < N)
    return errf(err, errlen, "buffer holds %zu bytes, the header needs 8 + %llu", buf_len,
                (unsigned long long)N);
  const char *text = (const char *)b + 8;
  size_t bad = utf8_bad_at((const unsigned char *)text, (size_t)N);
  if (bad != (size_t)N)
    return errf(err, errlen, "header: invalid UTF-8 at file offset %zu", bad + 8);

  char jerr[200];
  GtlJson *root = gtl_json_parse(text, (size_t)N, jerr, sizeof jerr);
  if (!root) {
    size_t at = 0;
    const char *why = jerr;
    if (sscanf(jerr, "offset %zu:", &at) == 1) {
      const char *colon = strchr(jerr, ':');
      why = colon ? colon + 2 : jerr;
    }
    return errf(err, errlen, "header: malformed JSON at file offset %zu: %s", at + 8, why);
  }
  int rc = -1;
  if (root->type != GTL_JSON_OBJ) {
    errf(err, errlen, "header: the JSON at file offset 8 is not an object");
    goto done;
  }

  /* Count tensors and metadata, size the one string block. */
  size_t n_t = 0, n_m = 0, str_bytes = 0;
  const GtlJson *meta = NULL;
  for (const GtlJson *c = root->child; c; c = c->next) {
    if (strcmp(c->key, "__metadata__") == 0) {
      if (meta) {
        errf(err, errlen, "__metadata__: appears twice");
        goto done;
      }
      meta = c;
      if (c->type != GTL_JSON_OBJ) {
        errf(err, errlen, "__metadata__: not an object of strings");
        goto done;
      }
      for (const GtlJson *m = c->child; m; m = m->next) {
        if (m->type != GTL_JSON_STR) {
          errf(err, errlen, "__metadata__: value of \"%s\" is not a string", m->key);
          goto done;
        }
        str_bytes += strlen(m->key) + strlen(m->str) + 2;
        n_m++;
      }
    } else {
      str_bytes += strlen(c->key) + 1;
      n_t++;
    }
  }
  st->header_len = N;
  st->data_offset = 8 + N;
  st->data_len = file_size - 8 - N;
  st->tensors = (GtlStTensor *)calloc(n_t ? n_t : 1, sizeof *st->tensors);
  st->by_name = (size_t *)calloc(n_t ? n_t : 1, sizeof *st->by_name);
  st->meta_key = (const char **)calloc(n_m ? n_m : 1, sizeof *st->meta_key);
  st->meta_val = (const char **)calloc(n_m ? n_m : 1, sizeof *st->meta_val);
  st->strings = (char *)malloc(str_bytes ? str_bytes : 1);
  const GtlStTensor **sorted = (const GtlStTensor **)calloc(n_t ? n_t : 1, sizeof *sorted);
  if (!st->tensors || !st->by_name || !st->meta_key || !st->meta_val || !st->strings || !sorted) {
    free(sorted);
    errf(err, errlen, "out of host memory for %zu tensors", n_t);
    goto done;
  }

  char *sp = st->strings;
  for (const GtlJson *c = root->child; c; c = c->next) {
    size_t L = strlen(c->key) + 1;
    if (c == meta) {
      for (const GtlJson *m = c->child; m; m = m->next) {
        size_t kl = strlen(m->key) + 1, vl = strlen(m->str) + 1;
        memcpy(sp, m->key, kl);
        st->meta_key[st->n_meta] = sp;
        sp += kl;
        memcpy(sp, m->str, vl);
        st->meta_val[st->n_meta++] = sp;
        sp += vl;
      }
      continue;
    }
    GtlStTensor *t = &st->tensors[st->n_tensors];
    memcpy(sp, c->key, L);
    t->name = sp;
    sp += L;
    if (tensor_from_json(t->name, c, st->data_len, st->data_offset, file_size, t, err,
                         errlen) != 0) {
      free(sorted);
      goto done;
    }
    st->n_tensors++;
  }

  /* Tiling: sorted by offset, each tensor starts where the previous ended. */
  qsort(st->tensors, st->n_tensors, sizeof *st->tensors, cmp_tensor_offsets);
  uint64_t at = 0;
  for (size_t i = 0; i < st->n_tensors; i++) {
    const GtlStTensor *t = &st->tensors[i];
    if (t->begin < at) {
      const GtlStTensor *p = &st->tensors[i - 1];
      errf(err, errlen,
           "tensor \"%s\": data_offsets: [%llu, %llu) overlaps tensor \"%s\" [%llu, %llu)",
           t->name, (unsigned long long)t->begin, (unsigned long long)t->end, p->name,
           (unsigned long long)p->begin, (unsigned long long)p->end);
      free(sorted);
      goto done;
    }
    if (t->begin > at) {
      errf(err, errlen,
           "tensor \"%s\": data_offsets: begins at %llu, leaving a hole: bytes [%llu, %llu) of "
           "the byte buffer belong to no tensor",
           t->name, (unsigned long long)t->begin, (unsigned long long)at,
           (unsigned long long)t->begin);
      free(sorted);
      goto done;
    }
    at = t->end;
  }
  if (at != st->data_len) {
    errf(err, errlen,
         "byte buffer: %llu trailing bytes after the last tensor (tensors end at %llu, the file "
         "holds %llu after the header)",
         (unsigned long long)(st->data_len - at), (unsigned long long)at,
         (unsigned long long)st->data_len);
    free(sorted);
    goto done;
  }

  /* Name index; a duplicate name is an error (JSON would silently keep one). */
  for (size_t i = 0; i < st->n_tensors; i++) sorted[i] = &st->tensors[i];
  qsort(sorted, st->n_tensors, sizeof *sorted, cmp_tensor_ptr_name);
  for (size_t i = 0; i < st->n_tensors; i++) {
    if (i && strcmp(sorted[i]->name, sorted[i - 1]->name) == 0) {
      errf(err, errlen, "tensor \"%s\": duplicate tensor name", sorted[i]->name);
      free(sorted);
      goto done;
    }
    st->by_name[i] = (size_t)(sorted[i] - st->tensors);
  }
  free(sorted);
  rc = 0;
done:
  gtl_json_free(root);
  if (rc != 0) gtl_st_free(st);
  return rc;
}

int gtl_st_open(const char *path, GtlSafetensors *st, char *err, size_t errlen) {
  memset(st, 0, sizeof *st);
  FILE *f = fopen(path, "rb");
  if (!f) return errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
  long size = -1;
  if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
  if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
    int e = errno;
    fclose(f);
    return errf(err, errlen, "%s: cannot get the file size: %s", path, strerror(e));
  }
  unsigned char prefix[8];
  size_t got = fread(prefix, 1, 8, f);
  uint64_t N = 0;
  for (int i = 7; i >= 0; i--) N = (N << 8) | prefix[i];
  char inner[480];
  int rc;
  if (got < 8 || N > GTL_ST_MAX_HEADER || N > (uint64_t)size - 8) {
    /* Let the parser name the problem from the prefix alone. */
    rc = gtl_st_parse(prefix, got, (uint64_t)size, st, inner, sizeof inner);
  } else {
    unsigned char *buf = (unsigned char *)malloc((size_t)(8 + N));
    if (!buf) {
      fclose(f);
      return errf(err, errlen, "%s: out of host memory for a %llu-byte header", path,
                  (unsigned long long)N);
    }
    memcpy(buf, prefix, 8);
    if (fread(buf + 8, 1, (size_t)N, f) != (size_t)N) {
      free(buf);
      fclose(f);
      return errf(err, errlen, "%s: short read of the %llu-byte header", path,
                  (unsigned long long)N);
    }
    rc = gtl_st_parse(buf, (size_t)(8 + N), (uint64_t)size, st, inner, sizeof inner);
    free(buf);
  }
  fclose(f);
  if (rc != 0) errf(err, errlen, "%s: %s", path, inner);
  return rc;
}

const GtlStTensor *gtl_st_find(const GtlSafetensors *st, const char *name) {
  size_t lo = 0, hi = st->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const GtlStTensor *t = &st->tensors[st->by_name[mid]];
    int c = strcmp(name, t->name);
    if (c == 0) return t;
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

const char *gtl_st_meta(const GtlSafetensors *st, const char *key) {
  for (size_t i = 0; i < st->n_meta; i++)
    if (strcmp(st->meta_key[i], key) == 0) return st->meta_val[i];
  return NULL;
}
