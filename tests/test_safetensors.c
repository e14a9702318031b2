/* test_safetensors.c — the safetensors reader and writer (common/safetensors.c):
 * writer → parser round trips over every dtype and several shapes, each malformed file
 * rejected with the field named, and no read outside the buffer on truncated or
 * corrupted input. */
#include "cmocka_all.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "rng.h"
#include "safetensors.h"

/* A whole file in memory: the header of gtl_st_header_build, then seeded bytes. */
typedef struct {
  unsigned char *p;
  size_t len, header_len;
} File;

static File build(GtlStTensor *t, size_t n, const char *const *meta, size_t n_meta,
                  uint64_t seed) {
  char err[300];
  File f = {NULL, 0, 0};
  unsigned char *h = gtl_st_header_build(t, n, meta, n_meta, &f.header_len, err, sizeof err);
  if (!h) fail_msg("header_build: %s", err);
  size_t data = n ? (size_t)t[n - 1].end : 0;
  f.len = f.header_len + data;
  f.p = (unsigned char *)malloc(f.len ? f.len : 1);
  memcpy(f.p, h, f.header_len);
  for (size_t i = 0; i < data; i++)
    f.p[f.header_len + i] = (unsigned char)(gtl_splitmix64(seed + i) >> 56);
  free(h);
  return f;
}

/* A file from header text: 8-byte length, the JSON as given, data_len seeded bytes. */
static File raw(const char *json, size_t data_len) {
  File f;
  size_t n = strlen(json);
  f.header_len = 8 + n;
  f.len = 8 + n + data_len;
  f.p = (unsigned char *)malloc(f.len);
  for (int i = 0; i < 8; i++) f.p[i] = (unsigned char)((uint64_t)n >> (8 * i));
  memcpy(f.p + 8, json, n);
  for (size_t i = 0; i < data_len; i++) f.p[8 + n + i] = (unsigned char)(i * 37 + 11);
  return f;
}

static GtlStTensor T(const char *name, GtlStDtype d, int ndim, uint64_t d0, uint64_t d1,
                     uint64_t d2) {
  GtlStTensor t;
  memset(&t, 0, sizeof t);
  t.name = name;
  t.dtype = d;
  t.ndim = ndim;
  t.shape[0] = d0;
  t.shape[1] = d1;
  t.shape[2] = d2;
  return t;
}

static void dtype_table_is_complete(void **state) {
  (void)state;
  static const size_t want[GTL_ST_DTYPE_COUNT] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1};
  for (int d = 0; d < GTL_ST_DTYPE_COUNT; d++) {
    GtlStDtype back;
    assert_int_equal(gtl_st_dtype_size((GtlStDtype)d), want[d]);
    assert_int_equal(gtl_st_dtype_from_name(gtl_st_dtype_name((GtlStDtype)d), &back), 0);
    assert_int_equal(back, d);
  }
  GtlStDtype x;
  assert_int_equal(gtl_st_dtype_from_name("bf16", &x), -1); /* names are case-sensitive */
  assert_int_equal(gtl_st_dtype_from_name("F4", &x), -1);
  assert_int_equal(gtl_st_dtype_size(GTL_ST_DTYPE_COUNT), 0);
}

static void round_trip_every_dtype_and_shape(void **state) {
  (void)state;
  GtlStTensor t[GTL_ST_DTYPE_COUNT + 3];
  char names[GTL_ST_DTYPE_COUNT][48];
  size_t n = 0;
  for (int d = 0; d < GTL_ST_DTYPE_COUNT; d++) {
    snprintf(names[d], sizeof names[d], "model.layers.%d.%s.weight", d,
             gtl_st_dtype_name((GtlStDtype)d));
    t[n++] = T(names[d], (GtlStDtype)d, 1 + d % 3, 3 + d, 2 + d % 4, 5);
  }
  t[n++] = T("scalar", GTL_ST_F32, 0, 0, 0, 0);
  t[n++] = T("empty \"quoted\" \\ name", GTL_ST_BF16, 3, 2, 0, 7);
  t[n++] = T("caf\xc3\xa9.bias", GTL_ST_F64, 2, 1, 9, 0);
  const char *meta[] = {"format", "pt", "note", "tab\tquote\"done"};
  File f = build(t, n, meta, 2, 42);
  assert_int_equal(f.header_len % 8, 0); /* the byte buffer starts 8-byte aligned */

  GtlSafetensors st;
  char err[300];
  assert_int_equal(gtl_st_parse(f.p, f.len, f.len, &st, err, sizeof err), 0);
  assert_int_equal(st.n_tensors, n);
  assert_int_equal(st.data_offset, f.header_len);
  assert_int_equal(st.data_len, f.len - f.header_len);
  for (size_t i = 0; i < n; i++) {
    const GtlStTensor *g = gtl_st_find(&st, t[i].name);
    if (!g) fail_msg("tensor %s not found", t[i].name);
    assert_string_equal(g->name, t[i].name);
    assert_int_equal(g->dtype, t[i].dtype);
    assert_int_equal(g->ndim, t[i].ndim);
    for (int k = 0; k < g->ndim; k++) assert_int_equal(g->shape[k], t[i].shape[k]);
    assert_int_equal(g->begin, t[i].begin);
    assert_int_equal(g->end, t[i].end);
    assert_int_equal(g->end - g->begin, gtl_st_numel(g) * gtl_st_dtype_size(g->dtype));
  }
  assert_int_equal(gtl_st_numel(gtl_st_find(&st, "scalar")), 1);
  assert_int_equal(gtl_st_numel(gtl_st_find(&st, "empty \"quoted\" \\ name")), 0);
  for (size_t i = 1; i < st.n_tensors; i++) /* sorted by offset */
    assert_true(st.tensors[i].begin >= st.tensors[i - 1].end);
  assert_null(gtl_st_find(&st, "model.layers.99.weight"));
  assert_string_equal(gtl_st_meta(&st, "format"), "pt");
  assert_string_equal(gtl_st_meta(&st, "note"), "tab\tquote\"done");
  assert_null(gtl_st_meta(&st, "absent"));
  gtl_st_free(&st);
  free(f.p);
}

static void file_writer_and_open_round_trip(void **state) {
  (void)state;
  enum { A = 6 * 10, B = 33 };
  uint16_t a[A];
  uint8_t b[B];
  for (int i = 0; i < A; i++) a[i] = (uint16_t)gtl_splitmix64(7 + (uint64_t)i);
  for (int i = 0; i < B; i++) b[i] = (uint8_t)gtl_splitmix64(99 + (uint64_t)i);
  GtlStTensor t[2] = {T("w", GTL_ST_BF16, 2, 6, 10, 0), T("q", GTL_ST_F8_E4M3, 1, B, 0, 0)};
  const void *data[2] = {a, b};
  char path[] = "/tmp/gtl_test_st_XXXXXX", err[400];
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(gtl_st_write(path, t, data, 2, NULL, 0, err, sizeof err), 0);
  GtlSafetensors st;
  if (gtl_st_open(path, &st, err, sizeof err) != 0) fail_msg("%s", err);
  const GtlStTensor *w = gtl_st_find(&st, "w"), *q = gtl_st_find(&st, "q");
  assert_non_null(w);
  assert_non_null(q);
  FILE *f = fopen(path, "rb");
  uint16_t a2[A];
  uint8_t b2[B];
  assert_int_equal(fseek(f, (long)(st.data_offset + w->begin), SEEK_SET), 0);
  assert_int_equal(fread(a2, 1, sizeof a2, f), sizeof a2);
  assert_int_equal(fseek(f, (long)(st.data_offset + q->begin), SEEK_SET), 0);
  assert_int_equal(fread(b2, 1, sizeof b2, f), sizeof b2);
  fclose(f);
  assert_memory_equal(a, a2, sizeof a);
  assert_memory_equal(b, b2, sizeof b);
  gtl_st_free(&st);
  remove(path);
  assert_int_equal(gtl_st_open(path, &st, err, sizeof err), -1); /* gone: open error */
  assert_non_null(strstr(err, "cannot open"));
}

/* Only the header need be in memory: a 1 TiB byte buffer is described, not allocated. */
static void header_alone_describes_a_large_file(void **state) {
  (void)state;
  GtlStTensor t[2] = {T("big", GTL_ST_U8, 2, 1ull << 20, 1ull << 20, 0),
                      T("tail", GTL_ST_I64, 1, 3, 0, 0)};
  char err[300];
  size_t hlen;
  unsigned char *h = gtl_st_header_build(t, 2, NULL, 0, &hlen, err, sizeof err);
  assert_non_null(h);
  uint64_t file_size = hlen + (1ull << 40) + 24;
  GtlSafetensors st;
  assert_int_equal(gtl_st_parse(h, hlen, file_size, &st, err, sizeof err), 0);
  assert_int_equal(gtl_st_find(&st, "tail")->begin, 1ull << 40);
  assert_int_equal(st.data_len, (1ull << 40) + 24);
  gtl_st_free(&st);
  free(h);
}

/* Each malformed file is rejected and the message names the field (and tensor). */
static void bad_files_are_rejected_naming_the_field(void **state) {
  (void)state;
  static const struct {
    const char *json;
    size_t data;
    const char *want1, *want2;
  } cases[] = {
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8,
       "malformed JSON at file offset", "expected"},
      {"[1, 2]", 0, "not an object", "file offset 8"},
      {"{\"a\":[1]}", 0, "tensor \"a\"", "not an object"},
      {"{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor \"a\"", "dtype: missing"},
      {"{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor \"a\"",
       "dtype: not a string"},
      {"{\"a\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor \"a\"",
       "unknown dtype \"F7\""},
      {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor \"a\"", "shape: missing"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "tensor \"a\"",
       "shape: not an array"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8, "tensor \"a\"",
       "shape: element 1"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "tensor \"a\"",
       "shape: element 0"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
       "tensor \"a\"", "shape: 9 dims"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
       "\"data_offsets\":[0,8]}}",
       8, "tensor \"a\"", "overflows"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor \"a\"", "data_offsets: missing"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8, "tensor \"a\"",
       "data_offsets: not an array of two"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", 8, "tensor \"a\"",
       "data_offsets: not non-negative"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8, "tensor \"a\"",
       "end 0 is before begin 8"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8, "tensor \"a\"",
       "data_offsets: [0, 16) out of range"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "tensor \"a\"",
       "holds 8 bytes but shape [3] of F32 needs 12"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
       8, "tensor \"b\"", "overlaps tensor \"a\""},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[12,16]}}",
       16, "tensor \"b\"", "hole: bytes [8, 12)"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 12, "byte buffer",
       "4 trailing bytes"},
      {"{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
       "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
       8, "tensor \"a\"", "duplicate"},
      {"{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
       1, "__metadata__", "\"k\" is not a string"},
      {"{\"__metadata__\":[\"x\"]}", 0, "__metadata__", "not an object"},
      {"{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "invalid UTF-8",
       "file offset 11"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    File f = raw(cases[i].json, cases[i].data);
    GtlSafetensors st;
    char err[400] = "";
    int rc = gtl_st_parse(f.p, f.len, f.len, &st, err, sizeof err);
    if (rc == 0) fail_msg("case %zu accepted: %s", i, cases[i].json);
    if (!strstr(err, cases[i].want1) || !strstr(err, cases[i].want2))
      fail_msg("case %zu: message \"%s\" lacks \"%s\" / \"%s\"", i, err, cases[i].want1,
               cases[i].want2);
    assert_int_equal(st.n_tensors, 0); /* left empty */
    gtl_st_free(&st);
    free(f.p);
  }
}

static void length_prefix_errors(void **state) {
  (void)state;
  GtlSafetensors st;
  char err[300];
  unsigned char b[16] = {0};
  assert_int_equal(gtl_st_parse(b, 5, 5, &st, err, sizeof err), -1);
  assert_non_null(strstr(err, "truncated file: 5 bytes"));

  b[0] = 100; /* N = 100, but the file has 16 bytes */
  assert_int_equal(gtl_st_parse(b, 16, 16, &st, err, sizeof err), -1);
  assert_non_null(strstr(err, "header length 100 (file offset 0) runs past the end"));

  for (int i = 0; i < 8; i++) b[i] = 0xFF; /* N = 2^64 - 1 must not wrap 8 + N */
  assert_int_equal(gtl_st_parse(b, 16, 16, &st, err, sizeof err), -1);
  assert_non_null(strstr(err, "runs past the end"));

  uint64_t N = 200000000; /* in the file, but over the reference reader's limit */
  for (int i = 0; i < 8; i++) b[i] = (unsigned char)(N >> (8 * i));
  assert_int_equal(gtl_st_parse(b, 16, 300000000, &st, err, sizeof err), -1);
  assert_non_null(strstr(err, "over the 100000000-byte limit"));

  File f = raw("{}", 0); /* valid, but the caller's buffer stops short of the header */
  assert_int_equal(gtl_st_parse(f.p, 9, f.len, &st, err, sizeof err), -1);
  assert_non_null(strstr(err, "buffer holds 9 bytes"));
  assert_int_equal(gtl_st_parse(f.p, f.len, f.len, &st, err, sizeof err), 0); /* no tensors */
  assert_int_equal(st.n_tensors, 0);
  gtl_st_free(&st);
  free(f.p);
}

/* Every truncation, and every byte of the header replaced by several values, must be
 * answered with a result or a message (no crash; run under ASan/valgrind to see reads).
 * Each parse gets its own exact-size heap copy, so a read past the end is caught. */
static void truncated_and_corrupted_files_never_crash(void **state) {
  (void)state;
  GtlStTensor t[3] = {T("x", GTL_ST_BF16, 2, 3, 4, 0), T("y", GTL_ST_F32, 1, 5, 0, 0),
                      T("z", GTL_ST_U8, 0, 0, 0, 0)};
  const char *meta[] = {"k", "v"};
  File f = build(t, 3, meta, 1, 5);
  char err[400];
  GtlSafetensors st;
  for (size_t k = 0; k < f.len; k++) {
    unsigned char *c = (unsigned char *)malloc(k ? k : 1);
    memcpy(c, f.p, k);
    err[0] = '\0';
    assert_int_equal(gtl_st_parse(c, k, k, &st, err, sizeof err), -1);
    assert_true(err[0] != '\0');
    free(c);
  }
  /* Which bytes may change without changing the file's meaning: those inside a JSON
   * string (a name, a metadata key or value — another printable character gives another
   * valid name) and the header's white-space padding. The 8-byte length prefix, the
   * quotes, the punctuation and every digit of a dtype, shape or offset may not: a
   * corruption there must be refused. Found by scanning the header text here, apart
   * from the parser. */
  const size_t hdr0 = 8, hdr1 = f.header_len; /* header_len counts the 8-byte prefix */
  unsigned char *neutral = (unsigned char *)calloc(f.len, 1);
  for (size_t i = hdr0, in_str = 0; i < hdr1; i++) {
    const unsigned char ch = f.p[i];
    if (in_str) {
      if (ch == '"') in_str = 0; else neutral[i] = 1; /* the writer escapes nothing here */
    } else if (ch == '"') {
      in_str = 1;
    } else if (ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r') {
      neutral[i] = 1;
    }
  }
  static const unsigned char vals[] = {0x00, 0x22, 0x2C, 0x30, 0x39, 0x5B, 0x5D, 0x7B,
                                       0x7D, 0x80, 0xC3, 0xFF, ' ', '-', 'e'};
  size_t accepted = 0, refused = 0;
  for (size_t i = 0; i < f.header_len; i++)
    for (size_t v = 0; v < sizeof vals; v++) {
      if (vals[v] == f.p[i]) continue;
      unsigned char *c = (unsigned char *)malloc(f.len);
      memcpy(c, f.p, f.len);
      c[i] = vals[v];
      err[0] = '\0';
      if (gtl_st_parse(c, f.len, f.len, &st, err, sizeof err) == 0) {
        accepted++;
        if (!neutral[i]) fprintf(stderr, "accepted a change at byte %zu: 0x%02x -> 0x%02x\n", i, f.p[i], vals[v]);
        assert_true(neutral[i]); /* only a string's character or padding may change */
        assert_int_equal(st.n_tensors, 3);
        gtl_st_free(&st);
      } else {
        refused++;
        assert_true(err[0] != '\0');
      }
      free(c);
    }
  assert_true(refused > 0 && accepted < refused); /* the header is mostly structure */
  free(neutral);
  free(f.p);
}

static void writer_refuses_bad_tensors(void **state) {
  (void)state;
  char err[300];
  size_t len;
  GtlStTensor dup[2] = {T("a", GTL_ST_U8, 1, 2, 0, 0), T("a", GTL_ST_U8, 1, 2, 0, 0)};
  assert_null(gtl_st_header_build(dup, 2, NULL, 0, &len, err, sizeof err));
  assert_non_null(strstr(err, "duplicate"));
  GtlStTensor res[1] = {T("__metadata__", GTL_ST_U8, 1, 2, 0, 0)};
  assert_null(gtl_st_header_build(res, 1, NULL, 0, &len, err, sizeof err));
  assert_non_null(strstr(err, "reserved"));
  GtlStTensor dims[1] = {T("d", GTL_ST_U8, 9, 2, 0, 0)};
  assert_null(gtl_st_header_build(dims, 1, NULL, 0, &len, err, sizeof err));
  assert_non_null(strstr(err, "ndim 9"));
  GtlStTensor dt[1] = {T("d", (GtlStDtype)99, 1, 2, 0, 0)};
  assert_null(gtl_st_header_build(dt, 1, NULL, 0, &len, err, sizeof err));
  assert_non_null(strstr(err, "dtype"));
  GtlStTensor big[1] = {T("d", GTL_ST_F64, 3, 1ull << 30, 1ull << 30, 1ull << 30)};
  assert_null(gtl_st_header_build(big, 1, NULL, 0, &len, err, sizeof err));
  assert_non_null(strstr(err, "overflows"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(dtype_table_is_complete),
      cmocka_unit_test(round_trip_every_dtype_and_shape),
      cmocka_unit_test(file_writer_and_open_round_trip),
      cmocka_unit_test(header_alone_describes_a_large_file),
      cmocka_unit_test(bad_files_are_rejected_naming_the_field),
      cmocka_unit_test(length_prefix_errors),
      cmocka_unit_test(truncated_and_corrupted_files_never_crash),
      cmocka_unit_test(writer_refuses_bad_tensors)};
  return cmocka_run_group_tests_name("safetensors", tests, NULL, NULL);
}
