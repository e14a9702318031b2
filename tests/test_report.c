/* test_report.c — the JSON result line and the ceilings/hardware-key helpers
 * (common/report.c, common/ceilings.c). */
#include "cmocka_all.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"
#include "json.h"
#include "report.h"

static void make_ctx(GtlCtx *c) {
  memset(c, 0, sizeof *c);
  c->target = "ch10";
  c->variant = "optimized";
  gtl_args_defaults(&c->args, 10, 100, GTL_L2_COLD);
  snprintf(c->dev.name, sizeof c->dev.name, "NVIDIA H200");
  snprintf(c->dev.hardware_key, sizeof c->dev.hardware_key, "h200");
  c->dev.cc_major = 9;
  c->dev.sms = 132;
  c->dev.runtime_version = 13000;
  c->dev.driver_version = 13000;
  gtl_ceilings_datasheet("h200", 0, &c->ceil);
}

static GtlJson *json_of(const GtlCtx *c, const GtlResult *r) {
  char buf[8192], err[200];
  FILE *f = fmemopen(buf, sizeof buf, "w");
  gtl_report_json(f, c, r);
  fclose(f);
  assert_true(strchr(buf, '\n') == buf + strlen(buf) - 1); /* exactly one line */
  GtlJson *j = gtl_json_parse(buf, strlen(buf), err, sizeof err);
  if (!j) fail_msg("report line is not JSON: %s (%s)", err, buf);
  return j;
}

static void json_line_has_every_design_field(void **state) {
  (void)state;
  GtlCtx c;
  make_ctx(&c);
  GtlResult r;
  gtl_result_init(&r, &c, "bf16", "M4096_N5760_K2880");
  float ms[] = {2.0f, 2.0f, 2.0f};
  gtl_stats_compute(ms, 3, &r.st);
  r.flops = 2.0 * 4096 * 5760 * 2880;
  r.bytes = 1e8;
  r.bound = GTL_BOUND_BF16;
  r.validated = 1;
  r.err.pass = 1;
  r.err.rel_l2 = 1e-3;
  r.err.tol_rel_l2 = 5e-3;
  GtlJson *j = json_of(&c, &r);
  const char *keys[] = {"schema", "target", "variant", "gpu", "hardware_key", "cc", "sms",
                        "arch_built", "dtype", "workload", "warmup", "iters", "l2",
                        "median_ms", "p95_ms", "p99_ms", "min_ms", "mean_ms", "stddev_ms",
                        "bytes", "flops", "gbps", "tflops", "pct_of_ceiling", "ref",
                        "ref_median_ms", "rel_l2_err", "max_abs_err", "tol", "status", "git"};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
    if (!gtl_json_get(j, keys[i])) fail_msg("missing key %s", keys[i]);
  assert_string_equal(gtl_json_str(j, "schema"), "gauntlet.v1");
  assert_string_equal(gtl_json_str(j, "status"), "PASS");
  assert_string_equal(gtl_json_str(j, "cc"), "9.0");
  assert_int_equal(gtl_json_get(j, "ref_median_ms")->type, GTL_JSON_NULL); /* NaN → null */
  double tf = gtl_json_num(j, "tflops", 0);
  assert_true(fabs(tf - r.flops / 2e-3 / 1e12) < 0.01 * tf);
  double pct = gtl_json_num(j, "pct_of_ceiling", 0);
  assert_true(fabs(pct - 100.0 * tf / 989.4) < 0.1);
  assert_null(gtl_json_get(j, "tokens_per_s")); /* labs only */
  gtl_json_free(j);
}

static void failed_and_untimed_results_report_nulls(void **state) {
  (void)state;
  GtlCtx c;
  make_ctx(&c);
  GtlResult r;
  gtl_result_init(&r, &c, "bf16", "w");
  r.validated = 1;
  r.err.pass = 0;
  r.err.rel_l2 = 0.5;
  GtlJson *j = json_of(&c, &r);
  assert_string_equal(gtl_json_str(j, "status"), "FAIL");
  assert_int_equal(gtl_json_get(j, "median_ms")->type, GTL_JSON_NULL);
  assert_int_equal(gtl_json_get(j, "gbps")->type, GTL_JSON_NULL);
  gtl_json_free(j);
  r.validated = 0;
  j = json_of(&c, &r);
  assert_string_equal(gtl_json_str(j, "status"), "UNVERIFIED");
  gtl_json_free(j);
}

static void lab_fields_and_extras_appear_when_set(void **state) {
  (void)state;
  GtlCtx c;
  make_ctx(&c);
  GtlResult r;
  gtl_result_init(&r, &c, "bf16", "w");
  r.is_lab = 1;
  r.tokens_per_s = 512;
  r.logits_hash = 0xabcULL;
  gtl_result_extra(&r, "pct_of_cublas", 71.5);
  gtl_result_extra(&r, "pct_of_cublas", 72.5); /* same key replaces */
  GtlJson *j = json_of(&c, &r);
  assert_true(gtl_json_num(j, "tokens_per_s", 0) == 512);
  assert_string_equal(gtl_json_str(j, "logits_hash"), "0000000000000abc");
  assert_true(gtl_json_num(j, "pct_of_cublas", 0) == 72.5);
  assert_int_equal(r.n_extra, 1);
  gtl_json_free(j);
}

static void hardware_keys_from_device_names(void **state) {
  (void)state;
  const char *cases[][2] = {{"NVIDIA H200", "h200"}, {"NVIDIA H100 80GB HBM3", "h100"},
                            {"NVIDIA A100-SXM4-80GB", "a100"},
                            {"NVIDIA GeForce RTX 4090", "rtx4090"}, {"NVIDIA B200", "b200"},
                            {"Tesla V100-SXM2-16GB", "v100"}};
  char k[64];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    assert_int_equal(gtl_hardware_key(cases[i][0], k, sizeof k), 0);
    assert_string_equal(k, cases[i][1]);
  }
  assert_int_equal(gtl_hardware_key("NVIDIA", k, sizeof k), -1);
  assert_string_equal(k, "unknown");
}

static void ceilings_file_is_read_and_errors_named(void **state) {
  (void)state;
  char dir[] = "/tmp/gtl_ceil_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256], err[512];
  snprintf(path, sizeof path, "%s/h200.json", dir);
  FILE *f = fopen(path, "w");
  fputs("{\"ceilings\": {\"copy_gbps\": 4100.5, \"bf16_tflops\": 780, \"fp8_tflops\": null}}", f);
  fclose(f);
  GtlCeilings c;
  assert_int_equal(gtl_ceilings_read(dir, "h200", &c, err, sizeof err), 0);
  assert_true(c.copy_gbps == 4100.5 && c.bf16_tflops == 780 && c.measured == 1);
  assert_true(isnan(c.fp8_tflops) && isnan(c.read_gbps));
  assert_int_equal(gtl_ceilings_read(dir, "h100", &c, err, sizeof err), -1);
  assert_non_null(strstr(err, "h100.json"));
  f = fopen(path, "w");
  fputs("{\"entries\": {}}", f);
  fclose(f);
  assert_int_equal(gtl_ceilings_read(dir, "h200", &c, err, sizeof err), -1);
  assert_non_null(strstr(err, "ceilings"));
  unlink(path);
  rmdir(dir);
}

static void out_of_memory_line_names_both_sizes(void **state) {
  (void)state;
  char buf[512];
  /* 3 GiB + 512 KiB asked with 1 GiB of 140 GiB free: sizes in MiB, one decimal */
  const size_t asked = ((size_t)3 << 30) + (512 << 10), free_b = (size_t)1 << 30,
               total = (size_t)140 << 30;
  gtl_oom_message(buf, sizeof buf, "device", "weights (bf16)", asked, free_b, total,
                  "cudaErrorMemoryAllocation");
  assert_string_equal(buf, "error: out of device memory allocating weights (bf16): asked 3072.5 MiB, "
                           "device free 1024.0 of 143360.0 MiB (cudaErrorMemoryAllocation)");
  /* a short buffer is cut, never overrun, and stays terminated */
  char small[16];
  memset(small, 'x', sizeof small);
  gtl_oom_message(small, sizeof small, "device", "w", asked, free_b, total, "e");
  assert_int_equal(strlen(small), sizeof small - 1);
}

static void fake_mem_info(size_t *free_b, size_t *total_b) {
  *free_b = (size_t)700 << 20;
  *total_b = (size_t)140 << 30;
}
/* gtl_die(lib, name, code, …) in a child, stderr into a pipe: its exit status and text. */
static int die_in_child(const char *lib, int code, char *out, size_t n) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fd[1], 2);
    close(fd[0]);
    gtl_mem_info_hook = fake_mem_info;
    gtl_die(lib, "X", code, "call(args)", "file.cu", 7);
  }
  close(fd[1]);
  size_t got = 0;
  ssize_t r;
  while (got + 1 < n && (r = read(fd[0], out + got, n - 1 - got)) > 0) got += (size_t)r;
  out[got] = '\0';
  close(fd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void library_out_of_memory_names_free_memory(void **state) {
  (void)state;
  char out[1024];
  /* cuBLAS's allocation failure: exit 3, the call, then the free memory */
  assert_int_equal(die_in_child("cuBLAS", 3, out, sizeof out), GTL_EXIT_RUNTIME);
  assert_non_null(strstr(out, "error: cuBLAS X (3) at file.cu:7: call(args)\n"));
  assert_non_null(strstr(out, "error: out of device memory in cuBLAS: device free 700.0 of 143360.0 MiB"));
  /* CUDA's cudaErrorMemoryAllocation (2) too */
  assert_int_equal(die_in_child("CUDA", 2, out, sizeof out), GTL_EXIT_RUNTIME);
  assert_non_null(strstr(out, "out of device memory in CUDA"));
  /* any other error: one line, no memory line */
  assert_int_equal(die_in_child("CUDA", 3, out, sizeof out), GTL_EXIT_RUNTIME);
  assert_null(strstr(out, "out of device memory"));
  assert_int_equal(die_in_child("NCCL", 3, out, sizeof out), GTL_EXIT_RUNTIME);
  assert_null(strstr(out, "out of device memory"));
}

static void datasheet_fallback_is_labelled(void **state) {
  (void)state;
  GtlCeilings c;
  gtl_ceilings_datasheet("h200", 0, &c);
  assert_true(c.copy_gbps == 4800 && c.bf16_tflops > 900 && c.measured == 0);
  assert_non_null(strstr(c.source, "datasheet"));
  gtl_ceilings_datasheet("mystery", 1234, &c);
  assert_true(c.copy_gbps == 1234 && isnan(c.bf16_tflops));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(json_line_has_every_design_field),
      cmocka_unit_test(failed_and_untimed_results_report_nulls),
      cmocka_unit_test(lab_fields_and_extras_appear_when_set),
      cmocka_unit_test(hardware_keys_from_device_names),
      cmocka_unit_test(out_of_memory_line_names_both_sizes),
      cmocka_unit_test(library_out_of_memory_names_free_memory),
      cmocka_unit_test(ceilings_file_is_read_and_errors_named),
      cmocka_unit_test(datasheet_fallback_is_labelled)};
  return cmocka_run_group_tests_name("report", tests, NULL, NULL);
}
