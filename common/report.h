/* report.h — the run context every program carries, and its output: '#' header lines,
 * a fixed-width table, exactly one flat JSON line (schema gauntlet.v1, docs/contract.md
 * section 2). Pure C11 (report.c), unit-tested (tests/test_report.c); the CUDA stream
 * is held as the struct cudaStream_t points to, so no CUDA header is needed here. */
#pragma once
#include <stdio.h>
#include "args.h"
#include "device.h"
#include "stats.h"
#include "validate.h"

#ifdef __cplusplus
extern "C" {
#endif

struct CUstream_st; /* cudaStream_t is `struct CUstream_st *` */

typedef struct {
  const char *target;  /* "ch10", "labs/03_tiling" */
  const char *variant; /* "baseline", "optimized" */
  GtlArgs args;
  GtlDevice dev;
  GtlCeilings ceil;
  struct CUstream_st *stream; /* dedicated non-blocking stream for the timed work */
  void *l2_flush;             /* device buffer of 2× L2, allocated on first cold bench */
  size_t l2_flush_bytes;
  int table_started;
} GtlCtx;

/* Which ceiling a program is bound by, for "% of ceiling". */
typedef enum {
  GTL_BOUND_NONE, GTL_BOUND_COPY, GTL_BOUND_READ, GTL_BOUND_BF16, GTL_BOUND_FP8,
  GTL_BOUND_TF32, GTL_BOUND_FP32, GTL_BOUND_H2D, GTL_BOUND_D2H
} GtlBound;

/** The ceiling value for a bound (GB/s for COPY/READ/H2D/D2H, TFLOP/s for the rest;
 *  NaN for NONE or unknown). */
double gtl_ceiling_of(const GtlCeilings *c, GtlBound b);
const char *gtl_bound_name(GtlBound b);

#define GTL_MAX_EXTRA 12
typedef struct {
  const char *variant;  /* row label; defaults to ctx->variant */
  const char *dtype;    /* "bf16", "fp32", … */
  char workload[160];   /* "M4096_N5760_K2880" ([A-Za-z0-9_] only) */
  GtlStats st;          /* milliseconds; st.n == 0 when not timed */
  double bytes, flops;  /* the minimum per iteration (roofline model); NaN → null */
  GtlBound bound;
  const char *ref;      /* "cpu_double", "cublas_fp32", … */
  double ref_median_ms; /* NaN → null */
  GtlErr err;
  int validated;        /* 0 with --no-verify */
  /* labs only (is_lab = 1 adds them to the JSON line) */
  int is_lab;
  double tokens_per_s, ms_per_token, batch;
  unsigned long long logits_hash;
  /* program-specific numbers appended to the JSON line, e.g. "pct_of_cublas" */
  int n_extra;
  const char *extra_key[GTL_MAX_EXTRA];
  double extra_val[GTL_MAX_EXTRA];
} GtlResult;

/** A result with every number NaN/null and status "not run". */
void gtl_result_init(GtlResult *r, const GtlCtx *ctx, const char *dtype, const char *workload);
/** Append a number to the JSON line (key in [a-z0-9_]); ignored past GTL_MAX_EXTRA. */
void gtl_result_extra(GtlResult *r, const char *key, double v);
/** "PASS", "FAIL", "UNVERIFIED" (validation skipped) */
const char *gtl_result_status(const GtlResult *r);
double gtl_result_gbps(const GtlResult *r);   /* bytes / median, 1e9 B/s; NaN if unknown */
double gtl_result_tflops(const GtlResult *r); /* flops / median, 1e12 FLOP/s */
double gtl_result_pct(const GtlResult *r, const GtlCeilings *c); /* % of its bound */

/** '#' header lines: program, GPU, CC, SMs, L2, memory, clocks, ceilings source, CUDA
 *  runtime/driver, workload, warm-up/iters/L2 policy, and `notes` (may hold newlines;
 *  each line gets a "# "). Nothing with --json. */
void gtl_report_header(const GtlCtx *ctx, const char *workload, const char *notes);
/** One fixed-width table row (prints the column heads first time). Nothing with --json. */
void gtl_report_row(GtlCtx *ctx, const GtlResult *r);
/** The flat JSON line for r (with '\n'). Every field of docs/contract.md is present; missing
 *  numbers are null. */
void gtl_report_json(FILE *f, const GtlCtx *ctx, const GtlResult *r);
/** Print r's JSON line on stdout and return the exit code: 0 PASS/UNVERIFIED, 1 FAIL. */
int gtl_report_finish(const GtlCtx *ctx, const GtlResult *r);

#ifdef __cplusplus
}
#endif
