/* args.c — the shared command line (see args.h). */
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

void gtl_args_defaults(GtlArgs *a, int warmup, int iters, GtlL2 l2) {
  memset(a, 0, sizeof *a);
  a->warmup = warmup;
  a->iters = iters;
  a->seed = 42;
  a->size = GTL_SIZE_DEFAULT;
  a->l2 = l2;
  a->device = 0;
  a->verify = 1;
}

const char *gtl_size_name(GtlSize s) {
  return s == GTL_SIZE_SMALL ? "small" : s == GTL_SIZE_LARGE ? "large" : "default";
}
const char *gtl_l2_name(GtlL2 l) {
  return l == GTL_L2_WARM ? "warm" : l == GTL_L2_ROTATE ? "rotate" : "cold";
}

int gtl_rotate_copies(size_t bytes_per_copy, size_t l2_bytes, int max_copies) {
  const uint64_t b = bytes_per_copy, l2 = l2_bytes, big = (uint64_t)1 << 60;
  if (b == 0 || b > big || l2 > big) return -1; /* below 2^60 nothing overflows */
  uint64_t n = (4 * l2 + b - 1) / b;             /* ceil(4 · L2 / bytes) */
  if (n < 2) n = 2;
  const uint64_t limit = max_copies > 0 ? (uint64_t)max_copies : (uint64_t)INT_MAX;
  return n > limit ? -1 : (int)n;
}

int gtl_rotate_k(int n_copies) {
  if (n_copies < 1) return -1;
  const long long k = (long long)n_copies * ((16 + n_copies - 1) / n_copies);
  return k > INT_MAX ? -1 : (int)k;
}

int gtl_rotate_pairs(int iters, int k) {
  if (iters < 1) iters = 1;
  if (k < 1) k = 1;
  const int by_iters = (int)(((long long)iters + k - 1) / k);
  const int floor_pairs = iters < 10 ? iters : 10;
  return by_iters > floor_pairs ? by_iters : floor_pairs;
}

static int parse_i64(const char *s, long long lo, long long hi, long long *out) {
  if (!s || !*s) return -1;
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end != '\0' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

static int parse_f64(const char *s, double *out) {
  if (!s || !*s) return -1;
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end != '\0' || v != v) return -1;
  *out = v;
  return 0;
}

#define FAIL(...)                                \
  do {                                           \
    if (err && errlen) snprintf(err, errlen, __VA_ARGS__); \
    return -1;                                   \
  } while (0)

int gtl_args_parse(GtlArgs *a, int argc, char **argv, const GtlOpt *extra, int n_extra,
                   char *err, size_t errlen) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "-h") == 0) {  /* the one short form: what everybody types first */
      a->help = 1;
      continue;
    }
    if (strncmp(arg, "--", 2) != 0) FAIL("unexpected argument '%s'", arg);
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    const char *val = eq ? eq + 1 : NULL;
    long long iv;
#define IS(s) (nlen == strlen(s) && strncmp(name, s, nlen) == 0)
    if (IS("help")) {
      if (val) FAIL("--help takes no value");
      a->help = 1;
    } else if (IS("json")) {
      if (val) FAIL("--json takes no value");
      a->json = 1;
    } else if (IS("no-verify")) {
      if (val) FAIL("--no-verify takes no value");
      a->verify = 0;
    } else if (IS("warmup")) {
      if (parse_i64(val, 0, 1000000, &iv)) FAIL("--warmup needs an integer 0..1000000, got '%s'", val ? val : "");
      a->warmup = (int)iv;
    } else if (IS("iters")) {
      if (parse_i64(val, 1, 1000000, &iv)) FAIL("--iters needs an integer 1..1000000, got '%s'", val ? val : "");
      a->iters = (int)iv;
    } else if (IS("seed")) {
      if (parse_i64(val, 0, 0x7fffffffffffffffLL, &iv)) FAIL("--seed needs a non-negative integer, got '%s'", val ? val : "");
      a->seed = (uint64_t)iv;
    } else if (IS("device")) {
      if (parse_i64(val, 0, 1023, &iv)) FAIL("--device needs an integer >= 0, got '%s'", val ? val : "");
      a->device = (int)iv;
    } else if (IS("size")) {
      if (val && !strcmp(val, "small")) a->size = GTL_SIZE_SMALL;
      else if (val && !strcmp(val, "default")) a->size = GTL_SIZE_DEFAULT;
      else if (val && !strcmp(val, "large")) a->size = GTL_SIZE_LARGE;
      else FAIL("--size must be small, default or large, got '%s'", val ? val : "");
    } else if (IS("l2")) {
      if (val && !strcmp(val, "cold")) a->l2 = GTL_L2_COLD;
      else if (val && !strcmp(val, "warm")) a->l2 = GTL_L2_WARM;
      else if (val && !strcmp(val, "rotate")) a->l2 = GTL_L2_ROTATE;
      else FAIL("--l2 must be cold, warm or rotate, got '%s'", val ? val : "");
    } else {
      const GtlOpt *o = NULL;
      for (int k = 0; k < n_extra; k++)
        if (nlen == strlen(extra[k].name) && strncmp(name, extra[k].name, nlen) == 0) o = &extra[k];
      if (!o) FAIL("unknown flag '%s'", arg);
      switch (o->kind) {
        case GTL_OPT_FLAG:
          if (val) FAIL("--%s takes no value", o->name);
          *(int *)o->dst = 1;
          break;
        case GTL_OPT_INT:
          if (parse_i64(val, -0x7fffffffffffffffLL, 0x7fffffffffffffffLL, &iv))
            FAIL("--%s needs an integer, got '%s'", o->name, val ? val : "");
          *(int64_t *)o->dst = (int64_t)iv;
          break;
        case GTL_OPT_DOUBLE: {
          double dv;
          if (parse_f64(val, &dv)) FAIL("--%s needs a number, got '%s'", o->name, val ? val : "");
          *(double *)o->dst = dv;
          break;
        }
        case GTL_OPT_STR:
          if (!val || !*val) FAIL("--%s needs a value", o->name);
          *(const char **)o->dst = val;
          break;
      }
    }
#undef IS
  }
  return 0;
}

static int g_offer_rotate = 0;
void gtl_args_offer_rotate(int on) { g_offer_rotate = on; }

void gtl_args_usage(FILE *f, const char *prog, const GtlOpt *extra, int n_extra) {
  fprintf(f,
          "usage: %s [--warmup=N] [--iters=N] [--seed=N] [--size=small|default|large]\n"
          "          [--l2=cold|warm%s] [--device=N] [--json] [--no-verify] [--help|-h]",
          prog, g_offer_rotate ? "|rotate" : "");
  for (int k = 0; k < n_extra; k++)
    fprintf(f, " [--%s%s]", extra[k].name,
            extra[k].kind == GTL_OPT_FLAG ? "" : extra[k].kind == GTL_OPT_STR ? "=S" : "=N");
  fprintf(f, "\n");
  for (int k = 0; k < n_extra; k++)
    fprintf(f, "  --%-14s %s\n", extra[k].name, extra[k].help ? extra[k].help : "");
}

void gtl_args_parse_or_exit(GtlArgs *a, int argc, char **argv, const GtlOpt *extra,
                            int n_extra) {
  char err[256];
  const char *prog = argc > 0 ? argv[0] : "program";
  if (gtl_args_parse(a, argc, argv, extra, n_extra, err, sizeof err) != 0) {
    fprintf(stderr, "%s: %s\n", prog, err);
    gtl_args_usage(stderr, prog, extra, n_extra);
    exit(GTL_EXIT_USAGE);
  }
  if (a->help) {
    gtl_args_usage(stdout, prog, extra, n_extra);
    exit(GTL_EXIT_PASS);
  }
}
