/* ceilings.c — hardware key, datasheet fallback and the expectations ceilings block
 * (see device.h). Pure C11. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device.h"
#include "json.h"

int gtl_hardware_key(const char *name, char *out, size_t n) {
  if (!out || n < 8) return -1;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", name ? name : "");
  /* Drop the vendor and product-line words, then keep the first word that names the
   * chip: "NVIDIA H100 80GB HBM3" → "H100"; "NVIDIA A100-SXM4-80GB" → "A100". */
  const char *skip[] = {"nvidia", "geforce", "tesla", "quadro", NULL};
  char *save = NULL, *tok = strtok_r(buf, " ", &save);
  size_t k = 0;
  while (tok) {
    int skipped = 0;
    for (int s = 0; skip[s]; s++)
      if (strcasecmp(tok, skip[s]) == 0) skipped = 1;
    if (!skipped) {
      if (strcasecmp(tok, "rtx") == 0) { /* "RTX 4090" → "rtx4090" */
        snprintf(out, n, "rtx");
        k = 3;
        tok = strtok_r(NULL, " ", &save);
        if (!tok) break;
      }
      for (const char *c = tok; *c && *c != '-' && k + 1 < n; c++)
        if (isalnum((unsigned char)*c)) out[k++] = (char)tolower((unsigned char)*c);
      break;
    }
    tok = strtok_r(NULL, " ", &save);
  }
  out[k] = '\0';
  if (k == 0) {
    snprintf(out, n, "unknown");
    return -1;
  }
  return 0;
}

void gtl_ceilings_datasheet(const char *key, double peak_gbps, GtlCeilings *c) {
  /* GB/s, bf16, fp8, tf32, fp32 TFLOP/s (dense), pinned H2D GB/s (PCIe/NVLink-C2C link) */
  static const struct { const char *key; double gbps, bf16, fp8, tf32, fp32, h2d; } t[] = {
      {"h200", 4800, 989.4, 1978.9, 494.7, 66.9, 64},  /* H200 SXM datasheet; PCIe 5 x16 */
      {"h100", 3350, 989.4, 1978.9, 494.7, 66.9, 64},  /* H100 SXM datasheet */
      {"a100", 2039, 312, NAN, 156, 19.5, 32},          /* A100 80GB SXM datasheet; PCIe 4 */
      {"b200", 8000, 2250, 4500, 1100, 80, 64},         /* DGX B200 datasheet, per GPU */
  };
  memset(c, 0, sizeof *c);
  double nan = NAN;
  c->copy_gbps = c->read_gbps = peak_gbps > 0 ? peak_gbps : nan;
  c->bf16_tflops = c->fp8_tflops = c->tf32_tflops = c->fp32_tflops = nan;
  c->h2d_gbps = c->d2h_gbps = c->launch_us = c->graph_launch_us = nan;
  snprintf(c->source, sizeof c->source, "datasheet (no entry for '%s'; bandwidth from clocks)", key);
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
    if (strcmp(key, t[i].key) != 0) continue;
    c->copy_gbps = c->read_gbps = t[i].gbps;
    c->bf16_tflops = t[i].bf16;
    c->fp8_tflops = t[i].fp8;
    c->tf32_tflops = t[i].tf32;
    c->fp32_tflops = t[i].fp32;
    c->h2d_gbps = c->d2h_gbps = t[i].h2d;
    snprintf(c->source, sizeof c->source, "datasheet (%s; run ch02/ceilings to measure)", key);
  }
  c->measured = 0;
}

int gtl_ceilings_read(const char *dir, const char *key, GtlCeilings *c, char *err,
                      size_t errlen) {
  char path[PATH_MAX];
  int w = snprintf(path, sizeof path, "%s/%s.json", dir, key);
  if (w < 0 || (size_t)w >= sizeof path) {
    snprintf(err, errlen, "expectations path too long");
    return -1;
  }
  GtlJson *j = gtl_json_parse_file(path, err, errlen);
  if (!j) return -1;
  const GtlJson *cb = gtl_json_get(j, "ceilings");
  if (!cb || cb->type != GTL_JSON_OBJ) {
    snprintf(err, errlen, "%s: no \"ceilings\" object", path);
    gtl_json_free(j);
    return -1;
  }
  GtlCeilings r;
  memset(&r, 0, sizeof r);
  r.copy_gbps = gtl_json_num(cb, "copy_gbps", NAN);
  r.read_gbps = gtl_json_num(cb, "read_gbps", NAN);
  r.bf16_tflops = gtl_json_num(cb, "bf16_tflops", NAN);
  r.fp8_tflops = gtl_json_num(cb, "fp8_tflops", NAN);
  r.tf32_tflops = gtl_json_num(cb, "tf32_tflops", NAN);
  r.fp32_tflops = gtl_json_num(cb, "fp32_tflops", NAN);
  r.h2d_gbps = gtl_json_num(cb, "h2d_gbps", NAN);
  r.d2h_gbps = gtl_json_num(cb, "d2h_gbps", NAN);
  r.launch_us = gtl_json_num(cb, "launch_us", NAN);
  r.graph_launch_us = gtl_json_num(cb, "graph_launch_us", NAN);
  r.measured = 1;
  size_t L = strlen(path) < sizeof r.source - 1 ? strlen(path) : sizeof r.source - 1;
  memcpy(r.source, path, L);
  r.source[L] = '\0';
  gtl_json_free(j);
  *c = r;
  return 0;
}

static int is_dir_with(const char *dir, const char *sub, char *out, size_t n) {
  char p[PATH_MAX];
  int w = snprintf(p, sizeof p, "%s/%s", dir, sub);
  if (w < 0 || (size_t)w >= sizeof p) return -1;
  if (access(p, R_OK | X_OK) != 0) return -1;
  w = snprintf(out, n, "%s", p);
  return (w < 0 || (size_t)w >= n) ? -1 : 0;
}

int gtl_find_expectations_dir(char *out, size_t n) {
  const char *root = getenv("GAUNTLET_ROOT");
  if (root && *root) return is_dir_with(root, "expectations", out, n);
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (len <= 0) return -1;
  exe[len] = '\0';
  for (int up = 0; up < 5; up++) {
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = '\0';
    if (is_dir_with(exe[0] ? exe : "/", "expectations", out, n) == 0) return 0;
  }
  return -1;
}
