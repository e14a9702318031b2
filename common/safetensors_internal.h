/* safetensors_internal.h — private to common/safetensors.c (the reader) and
 * common/safetensors_write.c (the writer): the dtype table and the checks both use (error
 * message, byte count with overflow check, UTF-8 validation, tensor order by name). Static
 * definitions: each of the two files compiles its own copy; include it nowhere else. */
#pragma once
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

static const struct {
  const char *name;
  size_t size;
} k_dtypes[GTL_ST_DTYPE_COUNT] = {
    [GTL_ST_BOOL] = {"BOOL", 1},       [GTL_ST_U8] = {"U8", 1},
    [GTL_ST_I8] = {"I8", 1},           [GTL_ST_I16] = {"I16", 2},
    [GTL_ST_U16] = {"U16", 2},         [GTL_ST_F16] = {"F16", 2},
    [GTL_ST_BF16] = {"BF16", 2},       [GTL_ST_I32] = {"I32", 4},
    [GTL_ST_U32] = {"U32", 4},         [GTL_ST_F32] = {"F32", 4},
    [GTL_ST_F64] = {"F64", 8},         [GTL_ST_I64] = {"I64", 8},
    [GTL_ST_U64] = {"U64", 8},         [GTL_ST_F8_E4M3] = {"F8_E4M3", 1},
    [GTL_ST_F8_E5M2] = {"F8_E5M2", 1},
};

static int errf(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* numel · dtype size of (shape, ndim, d) into *bytes; -1 when it overflows 64 bits. */
static int tensor_bytes(const uint64_t *shape, int ndim, GtlStDtype d, uint64_t *bytes) {
  uint64_t n = gtl_st_dtype_size(d);
  for (int i = 0; i < ndim; i++) {
    if (shape[i] != 0 && n > UINT64_MAX / shape[i]) return -1;
    n *= shape[i];
  }
  *bytes = n;
  return 0;
}

/* Offset of the first byte that is not valid UTF-8 (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or len when all of s is valid. */
static size_t utf8_bad_at(const unsigned char *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    size_t k;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) k = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
      k = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      k = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else return i;
    if (len - i <= k) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t j = 2; j <= k; j++)
      if (s[i + j] < 0x80 || s[i + j] > 0xBF) return i;
    i += k + 1;
  }
  return len;
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
  const GtlStTensor *x = *(const GtlStTensor *const *)a, *y = *(const GtlStTensor *const *)b;
  return strcmp(x->name, y->name);
}
