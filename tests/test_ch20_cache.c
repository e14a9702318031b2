/* test_ch20_cache.c — ch20's autotuning cache (ch20/tune_cache.h) without a GPU: the key
 * separates every part of the hardware and shape it names, buckets round as documented, a
 * saved cache reads back equal and leaves no temporary file, and damaged files are reported
 * (offset or field) and ignored — a foreign file is never overwritten. */
#include "cmocka_all.h"
#include <sys/stat.h>
#include "tmpdir.h"
#include "../ch20/tune_cache.h"

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *b = (char *)calloc(1, 1 << 16);
  size_t n = fread(b, 1, (1 << 16) - 1, f);
  b[n] = 0;
  fclose(f);
  return b;
}
static void spit(const char *path, const char *text) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
}
static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}
/* tune_cache_load with its report captured into log[n]. */
static int load_logged(TuneCache *c, const char *path, char *log, size_t n) {
  FILE *f = fmemopen(log, n, "w");
  assert_non_null(f);
  const int rc = tune_cache_load(c, path, f);
  fclose(f);
  return rc;
}

static void key_separates_every_part(void **state) {
  (void)state;
  char k[6][256];
  assert_int_equal(tune_key(k[0], 256, "attn", "NVIDIA H200", 132, 13000, "B16_S8192_Hkv8_w0"), 0);
  assert_string_equal(k[0], "attn|NVIDIA H200|sms=132|cuda=13000|B16_S8192_Hkv8_w0");
  assert_int_equal(tune_key(k[1], 256, "attn", "NVIDIA H100 80GB HBM3", 132, 13000, "B16_S8192_Hkv8_w0"), 0);
  assert_int_equal(tune_key(k[2], 256, "attn", "NVIDIA H200", 88, 13000, "B16_S8192_Hkv8_w0"), 0);
  assert_int_equal(tune_key(k[3], 256, "attn", "NVIDIA H200", 132, 12080, "B16_S8192_Hkv8_w0"), 0);
  assert_int_equal(tune_key(k[4], 256, "attn", "NVIDIA H200", 132, 13000, "B32_S8192_Hkv8_w0"), 0);
  assert_int_equal(tune_key(k[5], 256, "gemm", "NVIDIA H200", 132, 13000, "B16_S8192_Hkv8_w0"), 0);
  for (int i = 0; i < 6; i++)
    for (int j = i + 1; j < 6; j++) assert_string_not_equal(k[i], k[j]);
  assert_int_equal(tune_key(k[0], 16, "attn", "NVIDIA H200", 132, 13000, "B1"), -1); /* truncated */
  assert_int_equal(tune_key(k[0], 256, "attn", "GPU|x", 132, 13000, "B1"), -1);      /* ambiguous */
}

static void buckets_round_up_to_powers_of_two(void **state) {
  (void)state;
  char b[64];
  tune_bucket_attn(b, sizeof b, 12, 5000, 8, 0);
  assert_string_equal(b, "B16_S8192_Hkv8_w0");
  tune_bucket_attn(b, sizeof b, 16, 8192, 8, 128);
  assert_string_equal(b, "B16_S8192_Hkv8_w128");
  tune_bucket_attn(b, sizeof b, 1, 32768, 8, 0);
  assert_string_equal(b, "B1_S32768_Hkv8_w0");
  tune_bucket_gemm(b, sizeof b, 37, 8, 2, 264, 136);
  assert_string_equal(b, "T64_E8_k2_D264_F136");
  tune_bucket_gemm(b, sizeof b, 64, 128, 8, 2048, 768);
  assert_string_equal(b, "T64_E128_k8_D2048_F768");
  tune_bucket_gemm(b, sizeof b, 65, 128, 8, 2048, 768);
  assert_string_equal(b, "T128_E128_k8_D2048_F768");
  assert_int_equal(tune_pow2_ceil(1), 1);
  assert_int_equal(tune_pow2_ceil(0), 1);
}

static void save_then_load_round_trips(void **state) {
  (void)state;
  char *dir = tmp_dir_named("ch20_cache");
  char path[256], log[1024];
  snprintf(path, sizeof path, "%s/cache.json", dir);
  static TuneCache c, d;
  assert_int_equal(load_logged(&c, path, log, sizeof log), 0); /* missing file: empty, ours */
  assert_int_equal(c.n, 0);
  assert_int_equal(c.foreign, 0);
  TuneEntry a = {"attn|NVIDIA H200|sms=132|cuda=13000|B16_S8192_Hkv8_w0", "attn", {32, 0, 0, 0}, 1, 41.25};
  TuneEntry g = {"gemm|NVIDIA H200|sms=132|cuda=13000|T64_E128_k8_D2048_F768", "gemm", {16, 264, 396, 0}, 3, 12.5};
  assert_int_equal(tune_cache_put(&c, &a), 0);
  assert_int_equal(tune_cache_put(&c, &g), 0);
  a.cfg[0] = 48; /* the same key again replaces, not appends */
  assert_int_equal(tune_cache_put(&c, &a), 0);
  assert_int_equal(c.n, 2);
  char err[256];
  assert_int_equal(tune_cache_save(&c, path, err, sizeof err), 0);
  assert_int_equal(count_files(dir), 1); /* the temporary file was renamed, not left behind */
  assert_int_equal(load_logged(&d, path, log, sizeof log), 0);
  assert_int_equal(d.n, 2);
  assert_int_equal(d.skipped, 0);
  const TuneEntry *e = tune_cache_find(&d, a.key);
  assert_non_null(e);
  assert_int_equal(e->cfg[0], 48);
  assert_int_equal(e->n_cfg, 3);
  assert_int_equal(e->cfg[1], 3); /* left out: ch18's own kernel (3 stages) */
  assert_int_equal(e->cfg[2], 0); /* and its separate combine kernel */
  e = tune_cache_find(&d, g.key);
  assert_non_null(e);
  assert_int_equal(e->cfg[0], 16);
  assert_int_equal(e->cfg[1], 264);
  assert_int_equal(e->cfg[2], 396);
  assert_int_equal(e->n_cfg, 9); /* left out: ch15's own kernel for both launches at bm 16 */
  assert_int_equal(e->cfg[3], 64);
  assert_int_equal(e->cfg[4], 6);
  assert_int_equal(e->cfg[5], 64);
  assert_int_equal(e->cfg[6], 6);
  assert_int_equal(e->cfg[7], 0); /* and no programmatic dependent launch */
  assert_int_equal(e->cfg[8], 0); /* and ch15's sort kernel */
  assert_true(e->us > 12.49 && e->us < 12.51);
  assert_null(tune_cache_find(&d, "attn|NVIDIA H200|sms=88|cuda=13000|B16_S8192_Hkv8_w0"));
  char *text = slurp(path); /* the human-readable copies of the key's parts */
  assert_non_null(strstr(text, "\"gpu\":\"NVIDIA H200\",\"sms\":132,\"cuda\":13000,\"bucket\":\"T64_E128_k8_D2048_F768\""));
  free(text);
  rm_dir(dir);
}

static void corrupt_file_is_reported_and_kept(void **state) {
  (void)state;
  char *dir = tmp_dir_named("ch20_cache");
  char path[256], log[1024], err[256];
  snprintf(path, sizeof path, "%s/cache.json", dir);
  const char *broken = "{\"schema\":\"gauntlet.ch20.tune_cache.v1\",\"entries\":[{\"key\":";
  spit(path, broken);
  static TuneCache c;
  assert_int_equal(load_logged(&c, path, log, sizeof log), 1);
  assert_int_equal(c.n, 0);
  assert_int_equal(c.foreign, 1);
  assert_non_null(strstr(log, "offset")); /* where the parser gave up */
  assert_non_null(strstr(log, path));
  TuneEntry a = {"attn|X|sms=1|cuda=1|B1_S1_Hkv8_w0", "attn", {1, 0, 0, 0}, 1, 1.0};
  assert_int_equal(tune_cache_put(&c, &a), 0);
  assert_int_equal(tune_cache_save(&c, path, err, sizeof err), -1); /* never overwritten */
  char *text = slurp(path);
  assert_string_equal(text, broken);
  free(text);
  spit(path, "{\"schema\":\"something.else\",\"entries\":[]}"); /* valid JSON, not ours */
  assert_int_equal(load_logged(&c, path, log, sizeof log), 1);
  assert_non_null(strstr(log, "\"schema\""));
  assert_int_equal(c.foreign, 1);
  spit(path, "[1,2]");
  assert_int_equal(load_logged(&c, path, log, sizeof log), 1);
  assert_non_null(strstr(log, "root"));
  assert_int_equal(count_files(dir), 1);
  rm_dir(dir);
}

static void bad_entries_are_named_and_skipped(void **state) {
  (void)state;
  char *dir = tmp_dir_named("ch20_cache");
  char path[256], log[2048];
  snprintf(path, sizeof path, "%s/cache.json", dir);
  spit(path,
       "{\"schema\":\"gauntlet.ch20.tune_cache.v1\",\"entries\":["
       "{\"key\":\"attn|G|sms=1|cuda=1|b\",\"kernel\":\"attn\",\"config\":{\"splits\":8},\"us\":3},"
       "{\"key\":\"attn|G|sms=1|cuda=1|c\",\"kernel\":\"attn\",\"config\":{\"splits\":-3}},"
       "{\"key\":\"gemm|G|sms=1|cuda=1|d\",\"kernel\":\"gemm\",\"config\":{\"bm\":16,\"grid_up\":2.5,\"grid_down\":1}},"
       "{\"key\":\"attn|G|sms=1|cuda=1|e\",\"kernel\":\"conv\",\"config\":{}},"
       "{\"key\":\"gemm|G|sms=1|cuda=1|f\",\"kernel\":\"attn\",\"config\":{\"splits\":2}},"
       "{\"key\":\"gemm|G|sms=1|cuda=1|g\",\"kernel\":\"gemm\",\"config\":{\"bm\":32,\"grid_up\":132,\"grid_down\":264}},"
       "{\"key\":\"attn|G|sms=1|cuda=1|h\",\"kernel\":\"attn\",\"config\":{\"splits\":4,\"stages\":6,\"fused\":1}}"
       "]}");
  static TuneCache c;
  assert_int_equal(load_logged(&c, path, log, sizeof log), 0);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.skipped, 4);
  assert_int_equal(c.foreign, 0);
  assert_non_null(strstr(log, "entries[1].config.splits"));
  assert_non_null(strstr(log, "entries[2].config.grid_up"));
  assert_non_null(strstr(log, "entries[3].kernel"));
  assert_non_null(strstr(log, "entries[4].key"));
  assert_non_null(tune_cache_find(&c, "attn|G|sms=1|cuda=1|b"));
  assert_null(tune_cache_find(&c, "attn|G|sms=1|cuda=1|c"));
  const TuneEntry *g = tune_cache_find(&c, "gemm|G|sms=1|cuda=1|g");
  assert_non_null(g);
  assert_int_equal(g->cfg[2], 264);
  assert_int_equal(g->cfg[4], 4); /* bm 32: ch15's 4 stages */
  assert_int_equal(g->cfg[8], 0); /* no fused: ch15's sort kernel */
  const TuneEntry *h = tune_cache_find(&c, "attn|G|sms=1|cuda=1|h");
  assert_non_null(h);
  assert_int_equal(h->cfg[2], 1); /* fused: the combine inside the split kernel */
  char err[256]; /* a cache of ours with bad entries may be rewritten: the good ones stay */
  assert_int_equal(tune_cache_save(&c, path, err, sizeof err), 0);
  assert_int_equal(load_logged(&c, path, log, sizeof log), 0);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.skipped, 0);
  h = tune_cache_find(&c, "attn|G|sms=1|cuda=1|h");
  assert_non_null(h);
  assert_int_equal(h->cfg[2], 1); /* written back and read again */
  rm_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(key_separates_every_part), cmocka_unit_test(buckets_round_up_to_powers_of_two),
      cmocka_unit_test(save_then_load_round_trips), cmocka_unit_test(corrupt_file_is_reported_and_kept),
      cmocka_unit_test(bad_entries_are_named_and_skipped)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
