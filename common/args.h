/* args.h — the one command line every program shares (docs/contract.md):
 *   --warmup=N --iters=N --seed=N --size=small|default|large --l2=cold|warm
 *   --device=N --json --no-verify --help
 * plus the options a program adds (explicit dims, --variant=…), declared as a table.
 * Pure C11: unit-tested without a GPU (tests/test_args.c). */
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { GTL_SIZE_DEFAULT = 0, GTL_SIZE_SMALL, GTL_SIZE_LARGE } GtlSize;
typedef enum { GTL_L2_COLD = 0, GTL_L2_WARM } GtlL2;

/* Kinds of program-specific option. dst points to: int64_t (INT), double (DOUBLE),
 * const char* (STR, points into argv), int (FLAG, set to 1). */
typedef enum { GTL_OPT_INT, GTL_OPT_DOUBLE, GTL_OPT_STR, GTL_OPT_FLAG } GtlOptKind;

typedef struct {
  const char *name; /* without the leading "--", e.g. "M" or "variant" */
  GtlOptKind kind;
  void *dst;
  const char *help; /* one line for the usage text */
} GtlOpt;

typedef struct {
  int warmup;     /* untimed launches before timing; >= 0 */
  int iters;      /* timed launches; >= 1 */
  uint64_t seed;  /* input seed (splitmix64, common/rng.h) */
  GtlSize size;   /* workload preset */
  GtlL2 l2;       /* cold: flush L2 before every timed iteration */
  int device;     /* CUDA device ordinal */
  int json;       /* print only the JSON line */
  int verify;     /* 0 with --no-verify (times an unvalidated kernel: status "UNVERIFIED") */
  int help;       /* --help was given */
} GtlArgs;

/** Fill defaults: warmup/iters/l2 as given by the program, seed 42, size default,
 *  device 0, verify on. */
void gtl_args_defaults(GtlArgs *a, int warmup, int iters, GtlL2 l2);

/** Parse argv[1..argc-1] into `a` and the program's `extra` options.
 *  Accepts "--name=value" and, for flags, "--name". Returns 0 on success, or -1 with a
 *  one-line reason in err[errlen] (unknown flag, missing/garbage/out-of-range value).
 *  Integers must parse whole (strtoll, base 10) and fit int64; warmup >= 0, iters >= 1,
 *  iters <= 1000000, device >= 0. */
int gtl_args_parse(GtlArgs *a, int argc, char **argv, const GtlOpt *extra, int n_extra,
                   char *err, size_t errlen);

/** Print the usage text (common flags, then the program's options). */
void gtl_args_usage(FILE *f, const char *prog, const GtlOpt *extra, int n_extra);

/** gtl_args_parse, then: on --help print usage to stdout and exit 0; on error print the
 *  reason and the usage to stderr and exit 2 (GTL_EXIT_USAGE). */
void gtl_args_parse_or_exit(GtlArgs *a, int argc, char **argv, const GtlOpt *extra,
                            int n_extra);

const char *gtl_size_name(GtlSize s);
const char *gtl_l2_name(GtlL2 l);

#ifdef __cplusplus
}
#endif
