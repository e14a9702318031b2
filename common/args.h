/* args.h — the one command line every program shares (docs/contract.md):
 *   --warmup=N --iters=N --seed=N --size=small|default|large --l2=cold|warm|rotate
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
/* L2 policy of the timed iterations (bench.h says what each measures). GTL_L2_ROTATE is
 * accepted by the parser; a program that has not called gtl_allow_rotate() (bench.h)
 * rejects it with exit 2. */
typedef enum { GTL_L2_COLD = 0, GTL_L2_WARM, GTL_L2_ROTATE } GtlL2;

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
  GtlL2 l2;       /* cold: flush L2 before every timed iteration; rotate: see bench.h */
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
/** Whether the usage line offers --l2=rotate (0 by default): set by gtl_allow_rotate() in
 *  the programs that keep input copies to rotate; the parser accepts the value either way
 *  and bench.cu refuses it (exit 2) where it is not offered. */
void gtl_args_offer_rotate(int on);

/** gtl_args_parse, then: on --help print usage to stdout and exit 0; on error print the
 *  reason and the usage to stderr and exit 2 (GTL_EXIT_USAGE). */
void gtl_args_parse_or_exit(GtlArgs *a, int argc, char **argv, const GtlOpt *extra,
                            int n_extra);

/* --l2=rotate's counting rules (what the policy measures: bench.h). */
/** --l2=rotate's copy count: the smallest N >= 2 with N × bytes_per_copy >= 4 × l2_bytes,
 *  i.e. max(2, ceil(4 · l2_bytes / bytes_per_copy)): between two uses of one copy the step
 *  reads (N − 1) × bytes >= 4 × L2 − bytes of other copies, at least 2 × L2 (3 × L2 when
 *  one copy fits in L2). bytes_per_copy: bytes of the step's read-only
 *  inputs (one copy), l2_bytes: the device's L2 size (cudaDeviceProp::l2CacheSize); both in
 *  bytes. Returns -1 when bytes_per_copy is 0, either size is 2^60 or more, or N would
 *  exceed max_copies (the caller's limit; <= 0 means INT_MAX). Pure: no CUDA call. */
int gtl_rotate_copies(size_t bytes_per_copy, size_t l2_bytes, int max_copies);
/** --l2=rotate's iterations per event pair for n_copies >= 1 copies: the smallest multiple
 *  of n_copies that is >= 16 (every copy used equally; the event overhead, a few µs, spread
 *  over >= 16 kernels). Returns -1 when n_copies < 1 or the product overflows int. */
int gtl_rotate_k(int n_copies);
/** --l2=rotate's event pairs (samples) for `iters` timed iterations asked (>= 1) and K per
 *  pair (>= 1): max(ceil(iters / K), min(iters, 10)), i.e. about iters iterations in all
 *  but never fewer than 10 samples unless fewer than 10 iterations were asked. */
int gtl_rotate_pairs(int iters, int k);

const char *gtl_size_name(GtlSize s);
const char *gtl_l2_name(GtlL2 l);

#ifdef __cplusplus
}
#endif
