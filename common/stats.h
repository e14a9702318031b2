/* stats.h — order statistics of timing samples (also TTFT/TPOT series in the labs).
 * Pure C11, unit-tested (tests/test_stats.c). */
#pragma once
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int n;
  double median, p95, p99, min, max, mean, stddev; /* same unit as the samples */
} GtlStats;

/** Percentile p in [0,100] of an ascending array of n >= 1 values, by linear
 *  interpolation between closest ranks: h = (n-1)·p/100, x[floor h] + frac(h)·(x[ceil h] −
 *  x[floor h]) — Hyndman & Fan (1996) definition 7, numpy's default. */
double gtl_percentile_sorted(const double *sorted, int n, double p);

/** Stats of n float samples (e.g. ms from cudaEventElapsedTime). stddev is the sample
 *  standard deviation (n−1 denominator; 0 for n = 1). Returns 0, or -1 when n < 1 or a
 *  sample is not finite (out is then zeroed with n = 0). Does not modify x. */
int gtl_stats_compute(const float *x, int n, GtlStats *out);

#ifdef __cplusplus
}
#endif
